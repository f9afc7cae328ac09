#!/usr/bin/env bash
# `make demo` / `make demo-down`: runs the demo (e2e/src/bin/mla-demo.rs) in the
# background with its state in .demo/, and stops it again, checking that every process
# the demo started is gone (hack/check-leftovers.sh on the demo's own process registry).
set -euo pipefail
cd "$(dirname "$0")/.."
STATE="${MLA_DEMO_DIR:-$PWD/.demo}"
PIDFILE="$STATE/demo.pid"
# The demo's processes are recorded apart from those of tests, so that a demo left
# running does not count as a test's leftover, nor the other way round.
export MLA_PROCESS_REGISTRY="$STATE/processes"

running() { [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

up() {
  if running; then
    echo "[demo] already running (pid $(cat "$PIDFILE"))"; cat "$STATE/info.txt"; return
  fi
  mkdir -p "$STATE"
  rm -f "$STATE/ready" "$STATE/info.txt"
  date +%s >"$STATE/started"
  echo "[demo] building the binaries (cargo build --bins)"
  cargo build --locked --bins
  echo "[demo] starting; progress below, full output in $STATE/demo.log"
  nohup target/debug/mla-demo "$STATE" >"$STATE/demo.log" 2>&1 &
  echo $! >"$PIDFILE"
  local printed=0
  for _ in $(seq 1 600); do
    if [[ -f "$STATE/ready" ]]; then
      echo; cat "$STATE/info.txt"; return
    fi
    if ! running; then
      echo "[demo] failed; last lines of $STATE/demo.log:" >&2; tail -20 "$STATE/demo.log" >&2
      hack/check-leftovers.sh --since "$(cat "$STATE/started")" || true
      exit 1
    fi
    local lines; lines=$(grep -cE '^\[(demo|world)\]' "$STATE/demo.log" 2>/dev/null || true)
    if (( lines > printed )); then
      grep -E '^\[(demo|world)\]' "$STATE/demo.log" | tail -n +"$((printed + 1))"; printed=$lines
    fi
    sleep 0.5
  done
  echo "[demo] not ready after 300 s; see $STATE/demo.log" >&2; exit 1
}

down() {
  if running; then
    local pid; pid=$(cat "$PIDFILE")
    kill -TERM "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    # Last resort: without the demo, the watchdogs stop what it started.
    kill -KILL "$pid" 2>/dev/null || true
    echo "[demo] stopped"
  else
    echo "[demo] not running"
  fi
  rm -f "$PIDFILE" "$STATE/ready"
  hack/check-leftovers.sh --since "$(cat "$STATE/started" 2>/dev/null || echo 0)"
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
