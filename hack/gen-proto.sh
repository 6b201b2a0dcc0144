#!/usr/bin/env bash
# Regenerates the gRPC stubs of internal/stream/streampb with pinned
# generators: protoc-gen-go from go.mod's tool directive and
# protoc-gen-go-grpc v1.6.2 built into ./bin.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOFLAGS="${GOFLAGS:--trimpath}"
mkdir -p bin
GOBIN="$PWD/bin" go install google.golang.org/protobuf/cmd/protoc-gen-go
if [[ ! -x bin/protoc-gen-go-grpc ]] || ! bin/protoc-gen-go-grpc --version | grep -q '1.6.2'; then
	GOBIN="$PWD/bin" go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
fi
PATH="$PWD/bin:$PATH" protoc -I internal/stream/streampb \
	--go_out=internal/stream/streampb --go_opt=paths=source_relative \
	--go-grpc_out=internal/stream/streampb --go-grpc_opt=paths=source_relative \
	internal/stream/streampb/stream.proto
