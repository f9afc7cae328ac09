# The two set-up commands: `make test` and `make demo`. Both work on a fresh machine:
# they install what they need (Debian packages, control-plane binaries built from their
# Go modules) through hack/.

CARGO ?= cargo
export MLA_TOOLS_CACHE ?= $(HOME)/.cache/mla-controllers
# When `make test` started (hack/deployed-form.sh decides by it whether to run the pods e2e).
ifndef MLA_TEST_STARTED
export MLA_TEST_STARTED := $(shell date +%s)
endif

.PHONY: all build test deployed-form deps fmt-check clippy check-monitoring unit-and-integration check-leftovers crds demo demo-down images images-test e2e-pods kind-e2e kind-e2e-down bench bench-quick clean

all: build

build:
	$(CARGO) build --workspace --bins

## Installs what the tests need, then runs everything: fmt check, clippy -D warnings, the
## monitoring rules and dashboard (promtool), unit and integration tests (against real
## kube-apiservers), and then checks that no process the tests started is left behind;
## then the deployed form (images test and pods e2e) unless the run was a cold one
## (hack/deployed-form.sh).
test: deps fmt-check clippy check-monitoring unit-and-integration deployed-form

deployed-form:
	hack/deployed-form.sh

deps:
	hack/install-test-deps.sh

fmt-check:
	$(CARGO) fmt --all --check

clippy:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

## Alert rules (promtool check + unit tests) and the dashboard of manifests/monitoring/.
check-monitoring:
	hack/check-monitoring.sh

## The suites, then hack/check-leftovers.sh, which runs whether the suites passed or not
## (a panicking test is where a process is most likely left behind): fails when either
## fails.
unit-and-integration:
	@echo "$(CARGO) test --workspace --locked"; since=$$(date +%s); status=0; \
	$(CARGO) test --workspace --locked || status=$$?; \
	hack/check-leftovers.sh --since $$since || { [ $$status -ne 0 ] || status=1; }; \
	exit $$status

## Every benchmark program, one after the other, then one summary table (docs/benchmarks.md).
## `make bench-quick` runs smaller sizes.
bench: deps
	hack/bench.sh

bench-quick: deps
	hack/bench.sh --quick

## Processes of tests or benchmarks still alive after their owner ended (see docs/testing.md).
check-leftovers:
	hack/check-leftovers.sh

## Regenerates manifests/crds/ from the Rust types in common/src/api.
crds:
	$(CARGO) run --quiet --locked -p mla-common --bin crdgen -- manifests/crds

## Starts master, seed and user-cluster control planes with the three binaries running
## against them, in the background; prints kubeconfigs and admin URLs.
demo: deps
	hack/demo.sh up

demo-down:
	hack/demo.sh down

## Container images, built here without a registry (docs/images.md): the three binaries
## (mla-controllers/<binary>:$(IMAGE_TAG)) and the parts the pods e2e runs (mla-parts/...:
## nginx, prometheus, cortex, oauth2-proxy, mock-oidc, pause). Installs and starts Docker
## (hack/install-docker.sh) when it does not answer. `hack/build-images.sh --list` prints
## every image reference.
IMAGE_TAG ?= dev
images:
	IMAGE_TAG=$(IMAGE_TAG) hack/build-images.sh

## Builds the images, then runs each with Docker (e2e/tests/images.rs): non-root user,
## --help, no toolchain or shell, sizes printed, names resolved by DNS, nginx as the
## gateway runs it, Cortex and Prometheus ready. Not part of `make test` (a cold build
## takes minutes; see docs/images.md).
images-test: images
	IMAGE_TAG=$(IMAGE_TAG) $(CARGO) test --locked -p mla-e2e --test images -- --ignored --nocapture --test-threads 1

## The deployed form in real pods (docs/testing.md, "Pods"): seed and user clusters with a
## node each (containerd, kubelet, kube-proxy in namespaces of their own), the binaries
## from their images as Deployments, an agent pushing to Cortex. Root; not part of `make test`.
E2E_PODS_IMAGES = master-controller-manager seed-controller-manager user-cluster-controller-manager nginx prometheus pause
e2e-pods: deps
	hack/install-node-deps.sh
	hack/build-control-plane.sh --node >/dev/null
	IMAGE_TAG=$(IMAGE_TAG) hack/build-images.sh $(E2E_PODS_IMAGES) >/dev/null
	@echo "$(CARGO) test -p mla-e2e --locked --test pods"; since=$$(date +%s); status=0; \
	IMAGE_TAG=$(IMAGE_TAG) $(CARGO) test -p mla-e2e --locked --test pods -- --ignored --nocapture || status=$$?; \
	hack/check-leftovers.sh --since $$since || { [ $$status -ne 0 ] || status=1; }; \
	exit $$status

## The system on three kind clusters (needs Docker and kind; see docs/install.md).
kind-e2e:
	IMAGE_TAG=$(IMAGE_TAG) hack/kind-e2e.sh

kind-e2e-down:
	hack/kind-e2e.sh down

clean:
	$(CARGO) clean
	rm -rf .demo
