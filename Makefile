# Bulkhead — Kubernetes network segmentation.
SHELL := /usr/bin/env bash
.DEFAULT_GOAL := help

export GOFLAGS ?= -trimpath
BIN ?= $(CURDIR)/bin
GO ?= go

UNIT_PKGS        = ./api/... ./internal/... ./cmd/... ./hack/...
INTEGRATION_PKGS = ./test/crd/... ./test/manifests/... ./controllers/...
DATAPLANE_PKGS   = ./dataplane/...
E2E_PKGS         = ./test/e2e/...

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

.PHONY: deps
deps: ## Install Debian packages, bpffs and the control-plane binaries (idempotent).
	@hack/install-deps.sh

##@ Development

.PHONY: generate
generate: ## Regenerate deepcopy code, protobuf stubs and BPF objects.
	$(GO) tool controller-gen object paths=./api/...
	@if [[ -x hack/gen-proto.sh ]]; then hack/gen-proto.sh; fi
	@if [[ -x hack/gen-bpf.sh ]]; then hack/gen-bpf.sh; fi

.PHONY: manifests
manifests: ## Regenerate CRDs and RBAC under config/.
	$(GO) tool controller-gen crd paths=./api/... output:crd:artifacts:config=config/crd/bases
	@if [[ -d controllers ]] && ls controllers/*.go >/dev/null 2>&1; then \
	  $(GO) tool controller-gen rbac:roleName=bulkhead-controller paths=./controllers/... output:rbac:artifacts:config=config/rbac; fi
	$(GO) run sigs.k8s.io/kustomize/kustomize/v5@v5.8.2 build config/default > test/manifests/testdata/bulkhead.yaml
	$(GO) run sigs.k8s.io/kustomize/kustomize/v5@v5.8.2 build test/manifests/testdata/ebpf > test/manifests/testdata/bulkhead-ebpf.yaml

.PHONY: verify
verify: deps generate manifests ## Regenerate everything and fail on any diff.
	@git diff --exit-code -- api config internal bpf test/manifests/testdata || { echo "generated files are stale: run make generate manifests and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- api config internal bpf test/manifests/testdata)" || { git status --porcelain -- api config internal bpf test/manifests/testdata; echo "untracked generated files"; exit 1; }

.PHONY: fmt
fmt: ## Run gofmt.
	gofmt -l -w $$(git ls-files '*.go')

.PHONY: vet
vet: ## Run go vet.
	$(GO) vet ./...

.PHONY: build
build: ## Build the binaries into ./bin.
	@hack/build.sh $(BIN)

##@ Test

.PHONY: test
test: deps vet ## Run every test tier: unit, envtest, privileged dataplane, lab e2e.
	@hack/test.sh ./...

.PHONY: test-unit
test-unit: ## Unit and table tests (engine, CLI, IR).
	@hack/test.sh $(UNIT_PKGS)

.PHONY: test-integration
test-integration: deps ## envtest suites against a real kube-apiserver.
	@hack/test.sh $(INTEGRATION_PKGS)

.PHONY: test-dataplane
test-dataplane: deps ## Privileged dataplane tests in network namespaces (root).
	@hack/test.sh $(DATAPLANE_PKGS)

.PHONY: test-e2e
test-e2e: deps build ## Lab end-to-end reachability matrices (root).
	@hack/test.sh $(E2E_PKGS)

.PHONY: bench
bench: deps ## Go benchmarks and long fuzzing; results go in docs/benchmarks.md.
	@hack/bench.sh

##@ Run

.PHONY: demo
demo: deps build ## The local lab demo: zones enforced on real packets.
	@hack/demo.sh

.PHONY: docker-build
docker-build: ## Build the container image (needs a Docker engine).
	docker build -t bulkhead:dev .
