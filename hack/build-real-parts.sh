#!/usr/bin/env bash
# Builds the real third-party parts the tests, the demo and the benchmarks run against,
# from their Go modules, into a cache directory keyed by part and version (the same cache
# root and Go caches as hack/build-control-plane.sh):
#
#   cortex        github.com/cortexproject/cortex ./cmd/cortex (tags netgo,slicelabels)
#   prometheus    github.com/prometheus/prometheus ./cmd/prometheus and ./cmd/promtool (3.x)
#   oauth2-proxy  github.com/oauth2-proxy/oauth2-proxy/v7
#   mock-oidc     hack/mock-oidc (a small main around github.com/oauth2-proxy/mockoidc)
#
#   hack/build-real-parts.sh [part ...]   # all parts by default; prints one
#                                         # "<part> <bin dir>" line per part on stdout
#
# Environment: MLA_TOOLS_CACHE (cache root, default $HOME/.cache/mla-controllers),
# CORTEX_VERSION, PROMETHEUS_VERSION, OAUTH2_PROXY_VERSION, MOCKOIDC_VERSION.
set -euo pipefail

CORTEX_VERSION="${CORTEX_VERSION:-v1.21.1}"
# Prometheus 3.x is published as module versions v0.3xx.y.
PROMETHEUS_VERSION="${PROMETHEUS_VERSION:-v0.316.0}"
OAUTH2_PROXY_VERSION="${OAUTH2_PROXY_VERSION:-v7.15.6}"
MOCKOIDC_VERSION="${MOCKOIDC_VERSION:-v0.0.0-20261103160011-e06ed0b7cb7f}"
CACHE_ROOT="${MLA_TOOLS_CACHE:-$HOME/.cache/mla-controllers}"
HACK_DIR="$(cd "$(dirname "$0")" && pwd)"

export GOTOOLCHAIN=local
export CGO_ENABLED=0
export GOFLAGS=-buildvcs=false
# Module zips may carry a go.work naming folders the zip lacks (Prometheus does).
export GOWORK=off
export GOMODCACHE="${GOMODCACHE:-$CACHE_ROOT/go/mod}"
export GOCACHE="${GOCACHE:-$CACHE_ROOT/go/build}"

log() { printf '[build-real-parts] %s\n' "$*" >&2; }

work="$(mktemp -d)"
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT

# Copies module $1@$2 out of the module cache into a writable directory and prints it:
# these modules have replace directives, which only apply when building inside them.
module_copy() {
  local module="$1" version="$2" dir
  dir="$(go mod download -json "$module@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
  [[ -d "$dir" ]] || { log "could not download $module@$version"; exit 1; }
  local copy="$work/$(basename "$module")-$version"
  cp -r "$dir" "$copy"
  chmod -R u+w "$copy"
  echo "$copy"
}

# build <bin dir> <binary> <package> [go build flags...]: builds into <bin dir> atomically.
build() {
  local bin_dir="$1" name="$2" package="$3"
  shift 3
  mkdir -p "$bin_dir"
  go build -trimpath "$@" -o "$bin_dir/$name.tmp" "$package"
  mv "$bin_dir/$name.tmp" "$bin_dir/$name"
}

cortex() {
  local bin_dir="$CACHE_ROOT/real-parts/cortex-$CORTEX_VERSION/bin"
  if [[ ! -x "$bin_dir/cortex" ]]; then
    log "building cortex $CORTEX_VERSION (about 6 minutes on 2 cores)"
    local src; src="$(module_copy github.com/cortexproject/cortex "$CORTEX_VERSION")"
    # Cortex's own Makefile builds with these tags; without slicelabels the ingester
    # panics on the first push.
    (cd "$src" && build "$bin_dir" cortex ./cmd/cortex -tags netgo,slicelabels \
      -ldflags "-s -w -X github.com/cortexproject/cortex/pkg/util/version.Version=${CORTEX_VERSION#v}")
  fi
  echo "cortex $bin_dir"
}

prometheus() {
  local bin_dir="$CACHE_ROOT/real-parts/prometheus-$PROMETHEUS_VERSION/bin"
  if [[ ! -x "$bin_dir/prometheus" || ! -x "$bin_dir/promtool" ]]; then
    log "building prometheus and promtool $PROMETHEUS_VERSION (about 4 minutes on 2 cores)"
    local src; src="$(module_copy github.com/prometheus/prometheus "$PROMETHEUS_VERSION")"
    # Agent mode needs no UI assets (no builtinassets tag); of the service discoveries,
    # the agents use Kubernetes only.
    # Module v0.3MM.P is Prometheus 3.MM.P.
    local minor="${PROMETHEUS_VERSION#v0.3}"; minor="${minor%%.*}"
    local version="3.$((10#$minor)).${PROMETHEUS_VERSION##*.}"
    local ldflags="-s -w -X github.com/prometheus/common/version.Version=$version"
    (cd "$src" && build "$bin_dir" prometheus ./cmd/prometheus -tags netgo,remove_all_sd,enable_kubernetes_sd -ldflags "$ldflags" &&
      build "$bin_dir" promtool ./cmd/promtool -tags netgo,remove_all_sd,enable_kubernetes_sd -ldflags "$ldflags")
  fi
  echo "prometheus $bin_dir"
}

oauth2_proxy() {
  local bin_dir="$CACHE_ROOT/real-parts/oauth2-proxy-$OAUTH2_PROXY_VERSION/bin"
  if [[ ! -x "$bin_dir/oauth2-proxy" ]]; then
    log "building oauth2-proxy $OAUTH2_PROXY_VERSION"
    local src; src="$(module_copy github.com/oauth2-proxy/oauth2-proxy/v7 "$OAUTH2_PROXY_VERSION")"
    (cd "$src" && build "$bin_dir" oauth2-proxy . \
      -ldflags "-s -w -X github.com/oauth2-proxy/oauth2-proxy/v7/pkg/version.VERSION=$OAUTH2_PROXY_VERSION")
  fi
  echo "oauth2-proxy $bin_dir"
}

mock_oidc() {
  local sum; sum="$(cat "$HACK_DIR/mock-oidc/main.go" | sha256sum | cut -c1-12)"
  local bin_dir="$CACHE_ROOT/real-parts/mock-oidc-$MOCKOIDC_VERSION-$sum/bin"
  if [[ ! -x "$bin_dir/mock-oidc" ]]; then
    log "building mock-oidc (mockoidc $MOCKOIDC_VERSION)"
    mkdir -p "$work/mock-oidc" && cp "$HACK_DIR/mock-oidc/main.go" "$work/mock-oidc/"
    (cd "$work/mock-oidc" && go mod init mla-build/mock-oidc >/dev/null 2>&1 &&
      go get "github.com/oauth2-proxy/mockoidc@$MOCKOIDC_VERSION" >&2 && go mod tidy >&2 &&
      build "$bin_dir" mock-oidc . -ldflags "-s -w")
  fi
  echo "mock-oidc $bin_dir"
}

parts=("$@")
((${#parts[@]})) || parts=(cortex prometheus oauth2-proxy mock-oidc)
start=$SECONDS
for part in "${parts[@]}"; do
  case "$part" in
    cortex) cortex ;;
    prometheus) prometheus ;;
    oauth2-proxy) oauth2_proxy ;;
    mock-oidc) [[ -f "$HACK_DIR/mock-oidc/main.go" ]] && mock_oidc ;;
    *) log "unknown part $part (cortex, prometheus, oauth2-proxy, mock-oidc)"; exit 2 ;;
  esac
done
log "done in $((SECONDS - start))s"
