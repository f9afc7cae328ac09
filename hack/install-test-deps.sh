#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine: Debian packages (nginx,
# openssl, curl, jq, procps, iproute2), etcd, kube-apiserver, kube-controller-manager and
# kubectl (hack/build-control-plane.sh), and Cortex, Prometheus 3 with promtool,
# oauth2-proxy and the mock OIDC provider (hack/build-real-parts.sh), all built from their
# Go modules. Safe to run again: it only installs what is missing.
set -euo pipefail

need=()
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || need+=(nginx)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v jq >/dev/null 2>&1 || need+=(jq)
# hack/check-leftovers.sh lists processes and their sockets.
command -v ps >/dev/null 2>&1 || need+=(procps)
command -v ss >/dev/null 2>&1 || need+=(iproute2)

# shellcheck source=hack/lib/apt.sh
source "$(dirname "$0")/lib/apt.sh"
apt_install install-test-deps "${need[@]}"

"$(dirname "$0")/build-control-plane.sh"
# Cortex, Prometheus 3 with promtool, oauth2-proxy and the mock OIDC provider, from their
# Go modules (cached by version).
"$(dirname "$0")/build-real-parts.sh" >/dev/null
