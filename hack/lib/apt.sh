# Sourced by hack/install-*.sh: installs Debian packages without starting their services.
#
#   apt_install TAG PACKAGE...
#
# Debian starts services from postinst (nginx, containerd, ...); the tests start their own
# processes instead, so a policy-rc.d refuses every start while apt-get runs.
apt_install() {
  local tag="$1"
  shift
  (($#)) || return 0
  echo "[$tag] apt-get install $*" >&2
  local sudo_cmd=()
  [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq >/dev/null
  printf '#!/bin/sh\nexit 101\n' | "${sudo_cmd[@]}" tee /usr/sbin/policy-rc.d >/dev/null
  "${sudo_cmd[@]}" chmod +x /usr/sbin/policy-rc.d
  local status=0
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null || status=$?
  "${sudo_cmd[@]}" rm -f /usr/sbin/policy-rc.d
  return "$status"
}
