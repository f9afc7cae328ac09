#!/usr/bin/env bash
# Installs what the pods e2e's nodes need besides kubelet and kube-proxy
# (hack/build-control-plane.sh --node builds those): containerd and runc, the CNI plugins
# (bridge, host-local, loopback, portmap), iptables and conntrack for kube-proxy, and
# util-linux's nsenter, all from Debian. Safe to run again: installs only what is missing.
set -euo pipefail

need=()
command -v containerd >/dev/null 2>&1 || need+=(containerd)
command -v runc >/dev/null 2>&1 || need+=(runc)
[[ -x /usr/lib/cni/bridge ]] || need+=(containernetworking-plugins)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v conntrack >/dev/null 2>&1 || need+=(conntrack)
command -v nsenter >/dev/null 2>&1 || need+=(util-linux)
command -v ip >/dev/null 2>&1 || need+=(iproute2)

# shellcheck source=hack/lib/apt.sh
source "$(dirname "$0")/lib/apt.sh"
apt_install install-node-deps "${need[@]}"
