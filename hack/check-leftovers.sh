#!/usr/bin/env bash
# Fails when a process that tests, the demo or a benchmark started is still alive after
# its owner ended. Every process started through mla_e2e::ManagedProcess (e2e/src/
# process.rs) runs in a process group of its own, recorded in the process registry
# ($MLA_PROCESS_REGISTRY, default target/mla-processes/) until the group is gone. A record
# whose group still has a live process while its owner (the test, demo or benchmark
# process) is gone is a leftover: it is listed with its processes and the TCP ports they
# listen on. A group whose owner still runs (a benchmark or demo in another terminal) is
# not one. As a net for processes started some other way, nginx workers whose master is
# gone are leftovers too (started after --since, when given). Nodes of the pods e2e
# (e2e/src/node.rs) are leftovers when a network namespace or cgroup named after their
# test process (mla-pods-<pid>-...) outlives that process (their watchdog removes them
# within seconds of its death); listed with the processes still in their cgroups.
#
# Usage: hack/check-leftovers.sh [--grace SECONDS] [--since EPOCH-SECONDS] [--kill]
#   --grace  how long groups may take to go (watchdogs poll every second; nginx gets 5 s
#            for a graceful stop), default 20
#   --since  count orphaned nginx workers started at or after this time only
#   --kill   SIGKILL the leftover groups (and orphaned nginx workers) after listing them
set -euo pipefail
cd "$(dirname "$0")/.."

REGISTRY="${MLA_PROCESS_REGISTRY:-$PWD/target/mla-processes}"
grace=20 since=0 kill_them=0
while (($#)); do
  case "$1" in
    --grace) grace="$2"; shift 2 ;;
    --since) since="$2"; shift 2 ;;
    --kill) kill_them=1; shift ;;
    *) echo "usage: $0 [--grace SECONDS] [--since EPOCH-SECONDS] [--kill]" >&2; exit 2 ;;
  esac
done

say() { echo "[check-leftovers] $*" >&2; }

# "<pid> <state> <ppid> <pgid> <start-ticks>" for every process, from /proc (no procps needed).
snapshot() {
  local stat line rest
  for stat in /proc/[0-9]*/stat; do
    read -r line 2>/dev/null <"$stat" || continue
    rest=${line##*) }
    # shellcheck disable=SC2086
    set -- $rest
    echo "${stat//[!0-9]/} $1 $2 $3 ${20}"
  done
}

# Live (not zombie) members of group $1 in snapshot $2.
members() { awk -v g="$1" '$4 == g && $2 != "Z" && $2 != "X" { print $1 }' <<<"$2"; }
# Start ticks of process $1 in snapshot $2 (empty when there is none).
started() { awk -v p="$1" '$1 == p { print $5 }' <<<"$2"; }
field() { sed -n "s/^$1=//p" "$2" 2>/dev/null | head -1; }

# Classifies the records: removes those of groups that are gone, prints leftovers.
leftovers() {
  local snap="$1" record pgid start owner owner_start now
  for record in "$REGISTRY"/*; do
    [[ -f "$record" ]] || continue
    pgid=$(field pgid "$record") start=$(field start "$record")
    owner=$(field owner "$record") owner_start=$(field owner_start "$record")
    now=$(started "$pgid" "$snap")
    # The group's id is held by a process other than our leader: our group is gone
    # (the kernel does not hand out an id still in use as a process group id).
    if [[ -n "$now" && "$now" != "$start" ]] || [[ -z "$(members "$pgid" "$snap")" ]]; then
      rm -f "$record"
      continue
    fi
    if [[ -n "$owner" && "$(started "$owner" "$snap")" == "$owner_start" ]]; then
      continue # its owner still runs: not a leftover (yet)
    fi
    echo "$record"
  done
}

# Orphaned nginx workers: their parent is not an nginx process.
orphaned_nginx() {
  local snap="$1" pid ppid state pgid ticks parent_comm btime hz
  btime=$(awk '/^btime/ { print $2 }' /proc/stat) hz=$(getconf CLK_TCK)
  while read -r pid state ppid pgid ticks; do
    [[ "$state" == Z ]] && continue
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == nginx ]] || continue
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q '^nginx: worker process' || continue
    parent_comm=$(cat "/proc/$ppid/comm" 2>/dev/null || true)
    [[ "$parent_comm" == nginx ]] && continue
    ((btime + ticks / hz >= since)) || continue
    echo "$pid"
  done <<<"$snap"
}

# Network namespaces and cgroups of pods-e2e nodes whose test process is gone.
pods_leftovers() {
  local name pid
  { ls /run/netns 2>/dev/null; ls /sys/fs/cgroup/pids 2>/dev/null; } | { grep -E '^mla-pods-[0-9]+-' || true; } | sort -u |
    while read -r name; do
      pid=${name#mla-pods-} pid=${pid%%-*}
      kill -0 "$pid" 2>/dev/null || echo "$name"
    done
  return 0
}

cgroup_processes() {
  [[ -d "/sys/fs/cgroup/pids/$1" ]] && find "/sys/fs/cgroup/pids/$1" -name cgroup.procs -exec cat {} + 2>/dev/null
  return 0
}

show_processes() {
  local pids="$1"
  [[ -n "$pids" ]] || return 0
  if command -v ps >/dev/null; then
    ps -o pid,ppid,pgid,user,etime,args -p "$(tr '\n' ',' <<<"$pids" | sed 's/,$//')" | sed 's/^/    /' >&2
  else
    local pid
    for pid in $pids; do echo "    $pid $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" >&2; done
  fi
  if command -v ss >/dev/null; then
    local pattern
    pattern=$(sed 's/.*/pid=&,/' <<<"$pids" | paste -sd'|')
    local sockets
    sockets=$(ss -ltnpH 2>/dev/null | grep -E "$pattern" || true)
    if [[ -n "$sockets" ]]; then
      echo "    listening:" >&2
      sed 's/^/      /' <<<"$sockets" >&2
    fi
  fi
}

deadline=$((SECONDS + grace))
while :; do
  snap=$(snapshot)
  left=$(leftovers "$snap")
  orphans=$(orphaned_nginx "$snap")
  pods=$(pods_leftovers)
  [[ -z "$left" && -z "$orphans" && -z "$pods" ]] && break
  ((SECONDS < deadline)) || break
  sleep 1
done

if [[ -z "$left" && -z "$orphans" && -z "$pods" ]]; then
  running=0
  [[ -d "$REGISTRY" ]] && running=$(find "$REGISTRY" -maxdepth 1 -type f | wc -l)
  if ((running)); then
    say "ok: nothing left behind ($running group(s) in $REGISTRY still have a running owner)"
  else
    say "ok: nothing left behind"
  fi
  exit 0
fi

for record in $left; do
  pgid=$(field pgid "$record")
  say "LEFT BEHIND: $(field name "$record") (process group $pgid, owner pid $(field owner "$record") $(field owner_command "$record") is gone)"
  say "  command: $(field command "$record")"
  say "  log: $(field log "$record")"
  show_processes "$(members "$pgid" "$snap")"
done
if [[ -n "$orphans" ]]; then
  say "LEFT BEHIND: nginx workers whose master is gone:"
  show_processes "$orphans"
fi

for name in $pods; do
  say "LEFT BEHIND: pods-e2e node namespace or cgroup $name (its test process is gone)"
  show_processes "$(cgroup_processes "$name")"
done

if ((kill_them)); then
  for name in $pods; do
    # shellcheck disable=SC2046
    kill -s KILL $(cgroup_processes "$name") 2>/dev/null || true
    sleep 0.2
    [[ -e "/run/netns/$name" ]] && ip netns del "$name" 2>/dev/null
    for h in /sys/fs/cgroup/*/; do
      [[ -d "$h$name" ]] && find "$h$name" -depth -type d -exec rmdir {} + 2>/dev/null
    done
  done
  for record in $left; do
    pgid=$(field pgid "$record")
    kill -s KILL -- "-$pgid" 2>/dev/null || true
    rm -f "$record"
  done
  for pid in $orphans; do kill -s KILL "$pid" 2>/dev/null || true; done
  say "killed them"
else
  say "stop them with: $0 --kill"
fi
exit 1
