#!/usr/bin/env bash
# Makes a Docker engine answer on this machine: installs Debian's docker.io (dockerd,
# containerd, runc) when dockerd is missing, and starts dockerd in the background when
# `docker info` does not answer. Safe to run again and from several scripts at once: it
# does nothing when the daemon answers, and a lock keeps two callers from starting two
# daemons. Runs as root (or with sudo) on a fresh Debian machine.
#
#   hack/install-docker.sh        # prints nothing on stdout; progress on stderr
#
# Environment:
#   MLA_DOCKERD_LOG   where the daemon started here logs (default /var/log/mla-dockerd.log)
#   MLA_DOCKER_WAIT   seconds to wait for `docker info` after starting it (default 60)
#
# The machines this project is developed on have no init system that starts services, so
# the daemon is started directly (not through systemd or /etc/init.d); it keeps running
# after this script ends, like the service it stands in for. Debian's package keeps the
# .deb files in apt's own cache (/var/cache/apt/archives), so a second install on the same
# machine downloads nothing.
set -euo pipefail

LOG="${MLA_DOCKERD_LOG:-/var/log/mla-dockerd.log}"
WAIT="${MLA_DOCKER_WAIT:-60}"
LOCK="${MLA_DOCKER_LOCK:-/var/lock/mla-install-docker.lock}"

log() { printf '[install-docker] %s\n' "$*" >&2; }

sudo_cmd=()
[[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)

answers() { docker info >/dev/null 2>&1; }

answers && exit 0

# One caller at a time from here on (installing or starting); the others wait, then find
# the daemon answering.
mkdir -p "$(dirname "$LOCK")" 2>/dev/null || true
exec 9>"$LOCK"
flock 9
answers && exit 0

if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
  log "apt-get install docker.io"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq >/dev/null
  # Debian starts services from postinst through /etc/init.d; this script starts the
  # daemon itself, with its own log, once the install is done.
  printf '#!/bin/sh\nexit 101\n' | "${sudo_cmd[@]}" tee /usr/sbin/policy-rc.d >/dev/null
  "${sudo_cmd[@]}" chmod +x /usr/sbin/policy-rc.d
  status=0
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends docker.io >/dev/null || status=$?
  "${sudo_cmd[@]}" rm -f /usr/sbin/policy-rc.d
  ((status == 0)) || { log "apt-get install docker.io failed ($status)"; exit 1; }
fi

# A daemon may be running but not yet answering (started by another script a moment ago).
if ! pgrep -x dockerd >/dev/null 2>&1; then
  log "starting dockerd (log: $LOG)"
  # containerd is started by dockerd itself when none runs (it finds the binary on PATH).
  # setsid: the daemon outlives this script and does not get the caller's signals.
  "${sudo_cmd[@]}" setsid dockerd >>"$LOG" 2>&1 </dev/null &
fi

deadline=$((SECONDS + WAIT))
until answers; do
  if ((SECONDS >= deadline)); then
    log "dockerd did not answer within ${WAIT}s; last lines of $LOG:"
    tail -n 20 "$LOG" >&2 || true
    exit 1
  fi
  sleep 1
done
log "docker answers ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
