# Multi-stage build: static binaries (CGO off) on a minimal base. The build
# stage runs hack/build.sh, the same script `make build` and CI use.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN VERSION=${VERSION} hack/build.sh /out

# The controller runs as non-root.
FROM gcr.io/distroless/static-debian12:nonroot AS controller
COPY --from=build /out/bulkhead-controller /bulkhead-controller
USER 65532:65532
ENTRYPOINT ["/bulkhead-controller"]

# The agent needs NET_ADMIN (nftables, conntrack), BPF and PERFMON (eBPF tc
# programs and ring buffers) and SYS_ADMIN only to enter the host network
# namespace's bpffs; see docs/operations.md. The DaemonSet grants exactly
# those capabilities.
FROM gcr.io/distroless/static-debian12 AS agent
COPY --from=build /out/bulkhead-agent /bulkhead-agent
ENTRYPOINT ["/bulkhead-agent"]

FROM gcr.io/distroless/static-debian12:nonroot AS cli
COPY --from=build /out/bulkhead /bulkhead
USER 65532:65532
ENTRYPOINT ["/bulkhead"]
