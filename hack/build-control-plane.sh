#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager (the end-to-end suite runs its garbage
# and namespace collectors), kubectl (all from the same k8s.io/kubernetes version) and etcd from
# their Go modules into a cache directory keyed by version, so integration tests can run
# real control planes and kubectl without Docker or downloads from anywhere but the Go
# module proxy.
#
#   hack/build-control-plane.sh          # prints the bin directory on the last line
#   hack/build-control-plane.sh --node   # also kubelet, kube-proxy and kube-scheduler (the pods e2e)
#
# Environment:
#   MLA_TOOLS_CACHE   cache root (default: $HOME/.cache/mla-controllers)
#   KUBE_VERSION      k8s.io/kubernetes version (default below)
#   ETCD_VERSION      go.etcd.io/etcd/server/v3 version (default below)
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.36.3}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
CACHE_ROOT="${MLA_TOOLS_CACHE:-$HOME/.cache/mla-controllers}"
BIN_DIR="$CACHE_ROOT/control-plane/kube-$KUBE_VERSION-etcd-$ETCD_VERSION/bin"

# Go builds share one module and build cache below the tools cache, so a warm run is a
# no-op and a cold one never touches the developer's own GOPATH.
export GOTOOLCHAIN=local
export CGO_ENABLED=0
export GOFLAGS=-buildvcs=false
export GOMODCACHE="${GOMODCACHE:-$CACHE_ROOT/go/mod}"
export GOCACHE="${GOCACHE:-$CACHE_ROOT/go/build}"

log() { printf '[build-control-plane] %s\n' "$*" >&2; }

# The node binaries are only built on request: `make test` never runs a kubelet, and they
# add a few minutes to a cold build.
NODE=0
[[ "${1:-}" == "--node" ]] && NODE=1
node_cached() { [[ $NODE == 0 || ( -x "$BIN_DIR/kubelet" && -x "$BIN_DIR/kube-proxy" && -x "$BIN_DIR/kube-scheduler" ) ]]; }

if [[ -x "$BIN_DIR/kube-apiserver" && -x "$BIN_DIR/kube-controller-manager" && -x "$BIN_DIR/kubectl" && -x "$BIN_DIR/etcd" ]] && node_cached; then
  log "cached: $BIN_DIR"
  echo "$BIN_DIR"
  exit 0
fi

mkdir -p "$BIN_DIR"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

build_etcd() {
  if [[ -x "$BIN_DIR/etcd" ]]; then return; fi
  log "building etcd $ETCD_VERSION"
  mkdir -p "$work/etcd" && cd "$work/etcd"
  go mod init mla-build/etcd >/dev/null 2>&1
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2
  go build -trimpath -ldflags '-s -w' -o "$BIN_DIR/etcd.tmp" go.etcd.io/etcd/server/v3
  mv "$BIN_DIR/etcd.tmp" "$BIN_DIR/etcd"
}

# A module requiring k8s.io/kubernetes at $KUBE_VERSION, in which its commands build.
prepare_kube_module() {
  if [[ -f "$work/kube/go.mod" ]]; then cd "$work/kube"; return; fi
  mkdir -p "$work/kube" && cd "$work/kube"
  go mod init mla-build/kube >/dev/null 2>&1
  # The staging modules are required at v0.0.0 and replaced with local paths upstream;
  # replace directives of a dependency are ignored, so mirror them with real versions.
  local kube_mod staging_version
  kube_mod="$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
  [[ -f "$kube_mod" ]] || { log "could not find go.mod of k8s.io/kubernetes@$KUBE_VERSION"; exit 1; }
  staging_version="v0.${KUBE_VERSION#v1.}"
  grep -E '^[[:space:]]*k8s\.io/[a-z0-9-]+ => \./staging/' "$kube_mod" | awk '{print $1}' | sort -u |
    while read -r m; do
      go mod edit -replace "$m=$m@$staging_version"
    done
  go mod edit -require "k8s.io/kubernetes@$KUBE_VERSION"
  go mod tidy -e >/dev/null 2>&1 || true
  cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
GO
  go get "k8s.io/kubernetes/cmd/kube-apiserver@$KUBE_VERSION" "k8s.io/kubernetes/cmd/kube-controller-manager@$KUBE_VERSION" \
    "k8s.io/kubernetes/cmd/kubectl@$KUBE_VERSION" "k8s.io/kubernetes/cmd/kubelet@$KUBE_VERSION" \
    "k8s.io/kubernetes/cmd/kube-proxy@$KUBE_VERSION" "k8s.io/kubernetes/cmd/kube-scheduler@$KUBE_VERSION" >&2
}

# Builds the command k8s.io/kubernetes/cmd/$1 with the version stamped as upstream does.
build_kube_command() {
  local name="$1"
  if [[ -x "$BIN_DIR/$name" ]]; then return; fi
  log "building $name $KUBE_VERSION"
  prepare_kube_module
  local minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
  local ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  go build -trimpath -ldflags "$ldflags" -o "$BIN_DIR/$name.tmp" "k8s.io/kubernetes/cmd/$name"
  mv "$BIN_DIR/$name.tmp" "$BIN_DIR/$name"
}

start=$SECONDS
build_etcd
build_kube_command kube-apiserver
build_kube_command kube-controller-manager
build_kube_command kubectl
if [[ $NODE == 1 ]]; then
  build_kube_command kubelet
  build_kube_command kube-proxy
  build_kube_command kube-scheduler
fi
log "built in $((SECONDS - start))s: $BIN_DIR"
"$BIN_DIR/kube-apiserver" --version >&2
"$BIN_DIR/kubectl" version --client >&2
"$BIN_DIR/etcd" --version | head -1 >&2
echo "$BIN_DIR"
