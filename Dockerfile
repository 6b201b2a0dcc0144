# Multi-stage build: static binaries (CGO off) on a minimal base. The build
# stage runs hack/build.sh, the same script `make build` and CI use.
#
#   docker build --target controller -t ghcr.io/bulkhead-dev/bulkhead-controller:v0.1.0 .
#   docker build --target agent      -t ghcr.io/bulkhead-dev/bulkhead-agent:v0.1.0 .
#   docker build --target cli        -t ghcr.io/bulkhead-dev/bulkhead:v0.1.0 .
#
# The tags must match the images in config/default/kustomization.yaml.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN VERSION=${VERSION} hack/build.sh /out

# The controller runs as non-root (uid 65532) with a read-only root fs.
FROM gcr.io/distroless/static-debian12:nonroot AS controller
COPY --from=build /out/bulkhead-controller /bulkhead-controller
USER 65532:65532
ENTRYPOINT ["/bulkhead-controller"]

# The agent runs as uid 0 with every capability dropped but NET_ADMIN
# (nftables netlink, conntrack deletion, NFLOG, SO_RCVBUFFORCE); the eBPF
# component (config/agent/ebpf) adds BPF and PERFMON. It needs no NET_RAW,
# SYS_ADMIN or privileged mode. config/agent/daemonset.yaml grants exactly
# this; docs/operations.md explains each.
FROM gcr.io/distroless/static-debian12 AS agent
COPY --from=build /out/bulkhead-agent /bulkhead-agent
# The chained CNI plugin that gates new pods on the agent (docs/quarantine.md),
# for an init container or a node installer to copy into /opt/cni/bin.
COPY --from=build /out/bulkhead-cni /bulkhead-cni
ENTRYPOINT ["/bulkhead-agent"]

FROM gcr.io/distroless/static-debian12:nonroot AS cli
COPY --from=build /out/bulkhead /bulkhead
USER 65532:65532
ENTRYPOINT ["/bulkhead"]
