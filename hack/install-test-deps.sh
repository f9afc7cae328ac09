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

if ((${#need[@]})); then
  echo "[install-test-deps] apt-get install ${need[*]}" >&2
  sudo_cmd=()
  [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq >/dev/null
  # Debian starts services from postinst; tests start their own processes instead.
  printf '#!/bin/sh\nexit 101\n' | "${sudo_cmd[@]}" tee /usr/sbin/policy-rc.d >/dev/null
  "${sudo_cmd[@]}" chmod +x /usr/sbin/policy-rc.d
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  "${sudo_cmd[@]}" rm -f /usr/sbin/policy-rc.d
fi

"$(dirname "$0")/build-control-plane.sh"
# Cortex, Prometheus 3 with promtool, oauth2-proxy and the mock OIDC provider, from their
# Go modules (cached by version).
"$(dirname "$0")/build-real-parts.sh" >/dev/null
