#!/usr/bin/env bash
# Runs every benchmark program and prints one summary table (figure, value, goal, met,
# command), as docs/benchmarks.md keeps it.
#
#   hack/bench.sh                 # every benchmark at its default size
#   hack/bench.sh --quick         # smaller sizes (minutes, not tens of minutes)
#   BENCH_ONLY="master gateway" hack/bench.sh   # a subset
#
# Each benchmark reports its figures through mla_e2e::bench::report, which appends them to
# $MLA_BENCH_RESULTS; this script sets it, runs the programs one after the other (never
# beside each other: they measure against this machine's limits) and prints the table.
# A benchmark that fails is reported as such; the script then exits non-zero.
set -uo pipefail

cd "$(dirname "$0")/.."
QUICK=0
[[ "${1:-}" == "--quick" ]] && QUICK=1
RESULTS_DIR="${MLA_BENCH_DIR:-target/bench}"
mkdir -p "$RESULTS_DIR"
export MLA_BENCH_RESULTS="$RESULTS_DIR/results.tsv"
: > "$MLA_BENCH_RESULTS"
failed=()

# name, default command, quick command
BENCHES=(
  "master|cargo run --release --locked -p mla-e2e --bin bench-master-sync -- 10000 30|cargo run --release --locked -p mla-e2e --bin bench-master-sync -- 2000 15"
  "gateway|cargo bench --locked -p seed-controller-manager --bench gateway -- 1000 30|cargo bench --locked -p seed-controller-manager --bench gateway -- 300 15"
  "seed-scale|cargo bench --locked -p seed-controller-manager --bench seed_scale -- 5000 300|cargo bench --locked -p seed-controller-manager --bench seed_scale -- 1000"
  "grafana|cargo bench --locked -p seed-controller-manager --bench grafana -- 5000 1000 10000|cargo bench --locked -p seed-controller-manager --bench grafana -- 300 50 500 10"
  "agents|cargo bench --locked -p user-cluster-controller-manager --bench agents|cargo bench --locked -p user-cluster-controller-manager --bench agents"
  "first-sample|cargo bench --locked -p mla-e2e --bench first_sample -- 5|cargo bench --locked -p mla-e2e --bench first_sample -- 3"
)

for entry in "${BENCHES[@]}"; do
  IFS='|' read -r name full quick <<<"$entry"
  if [[ -n "${BENCH_ONLY:-}" && " $BENCH_ONLY " != *" $name "* ]]; then continue; fi
  cmd="$full"; ((QUICK)) && cmd="$quick"
  echo "=== $name: $cmd" >&2
  log="$RESULTS_DIR/$name.log"
  started=$(date +%s)
  if ! MLA_BENCH_COMMAND="$cmd" bash -c "$cmd" >"$log" 2>&1; then
    failed+=("$name")
    printf '%s\tFAILED (see %s)\t-\tno\t%s\n' "$name" "$log" "$cmd" >>"$MLA_BENCH_RESULTS"
    tail -n 20 "$log" >&2
  fi
  echo "=== $name: $(( $(date +%s) - started )) s" >&2
done

{
  echo
  echo "Machine: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB, $(uname -r), $(date -u +%Y-%m-%d)"
  echo
  echo "| figure | value | goal | met | command |"
  echo "|---|---|---|---|---|"
  while IFS=$'\t' read -r figure value goal met command; do
    echo "| $figure | $value | $goal | $met | \`$command\` |"
  done <"$MLA_BENCH_RESULTS"
} | tee "$RESULTS_DIR/summary.md"

if ((${#failed[@]})); then
  echo "failed: ${failed[*]}" >&2
  exit 1
fi
