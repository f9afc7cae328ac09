#!/usr/bin/env bash
# Checks manifests/monitoring/: the alert rules (`promtool check rules`, and their unit
# tests with `promtool test rules`) and the Grafana dashboard (valid JSON, unique panel
# ids, every query valid PromQL, and every metric the dashboard, the rules and the rule
# tests name exposed by a binary according to metrics.txt, which e2e/tests/manifests.rs
# checks against the running binaries). Needs jq, and Prometheus 3's promtool: $PROMTOOL,
# else the one hack/build-real-parts.sh builds (the agents' Prometheus version).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
dir="$root/manifests/monitoring"
rules="$dir/alerts.yaml"
rule_tests="$dir/alerts.test.yaml"
dashboard="$dir/dashboard.json"
metrics="$dir/metrics.txt"

log() { printf '[check-monitoring] %s\n' "$*" >&2; }
fail() { printf '[check-monitoring] FAIL: %s\n' "$*" >&2; exit 1; }

command -v jq >/dev/null 2>&1 || fail "jq not found (hack/install-test-deps.sh installs it)"
if [[ -z "${PROMTOOL:-}" ]]; then
  bin_dir="$("$root/hack/build-real-parts.sh" prometheus | sed -n 's/^prometheus //p')"
  PROMTOOL="$bin_dir/promtool"
fi
[[ -x "$PROMTOOL" ]] || fail "promtool not found at $PROMTOOL (hack/build-real-parts.sh prometheus builds it)"
promtool() { "$PROMTOOL" "$@"; }
log "$("$PROMTOOL" --version 2>&1 | head -1)"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

log "promtool check rules $(basename "$rules")"
promtool check rules "$rules" >&2
log "promtool test rules $(basename "$rule_tests")"
(cd "$dir" && promtool test rules "$(basename "$rule_tests")") >&2

log "dashboard $(basename "$dashboard")"
jq -e 'type == "object"' "$dashboard" >/dev/null || fail "$dashboard is not a JSON object"
jq -e '(.uid | type == "string" and length > 0) and (.title | type == "string" and length > 0)' "$dashboard" >/dev/null ||
  fail "the dashboard needs a uid and a title"
# Panels may nest in collapsed rows.
all_panels='[.panels[]?, (.panels[]?.panels[]?)]'
duplicates="$(jq -r "$all_panels | map(.id) | group_by(.) | map(select(length > 1) | .[0]) | .[]" "$dashboard")"
[[ -z "$duplicates" ]] || fail "duplicate panel ids: $duplicates"
missing_ds="$(jq -r "$all_panels | map(select(.type != \"row\" and (.datasource.uid // \"\") != \"\${datasource}\")) | .[].title" "$dashboard")"
[[ -z "$missing_ds" ]] || fail "panels not using the \$datasource variable: $missing_ds"
empty="$(jq -r "$all_panels | map(select(.type != \"row\" and ((.targets // []) | length) == 0)) | .[].title" "$dashboard")"
[[ -z "$empty" ]] || fail "panels without queries: $empty"

# Every panel query and variable query as PromQL: Grafana's variables replaced by values
# of the right type, label_values(selector, label) reduced to its selector.
jq -r "$all_panels | .[].targets[]?.expr // empty" "$dashboard" >"$work/exprs"
jq -r '.templating.list[]? | select(.type == "query") | (.query.query? // .query)' "$dashboard" |
  sed -E 's/^label_values\((.*), *[a-zA-Z_]+\)$/\1/; s/^label_values\(([a-zA-Z_]+)\)$/up{\1!=""}/' >>"$work/exprs"
[[ -s "$work/exprs" ]] || fail "the dashboard has no queries"
{
  echo "groups:"
  echo "  - name: dashboard"
  echo "    rules:"
  n=0
  while IFS= read -r expr; do
    n=$((n + 1))
    expr="${expr//\$__rate_interval/5m}"
    expr="${expr//\$__interval/1m}"
    expr="$(sed -E 's/\$\{?[a-zA-Z_]+\}?/.*/g' <<<"$expr")"
    printf '      - record: dashboard:query_%d\n        expr: %s\n' "$n" "$(jq -Rn --arg e "$expr" '$e')"
  done <"$work/exprs"
} >"$work/dashboard-rules.yaml"
promtool check rules "$work/dashboard-rules.yaml" >/dev/null 2>"$work/promtool.err" ||
  fail "a dashboard query is not valid PromQL: $(cat "$work/promtool.err")"
log "$(wc -l <"$work/exprs") dashboard queries are valid PromQL"

# The metrics every binary exposes, with the series names of histograms.
awk '!/^#/ && NF == 3 {
  if ($3 == "histogram") { print $2 "_bucket"; print $2 "_sum"; print $2 "_count" } else { print $2 }
}' "$metrics" | sort -u >"$work/known"
[[ -s "$work/known" ]] || fail "$metrics lists no metrics"
{
  cat "$work/exprs"
  grep -vE '^\s*#' "$rules"
  grep -vE '^\s*#' "$rule_tests"
} | grep -oE '\b(mla|process)_[a-z0-9_]+' | sort -u >"$work/used"
unknown="$(comm -23 "$work/used" "$work/known")"
[[ -z "$unknown" ]] || fail "metrics used but not exposed by any binary (metrics.txt): $(tr '\n' ' ' <<<"$unknown")"
log "all $(wc -l <"$work/used") metrics used are exposed"

# Every metric family is on the dashboard.
unused="$(awk '!/^#/ && NF == 3 { print $2 }' "$metrics" | sort -u | while read -r family; do
  grep -qE "\b${family}(_bucket|_sum|_count)?\b" "$work/exprs" || echo "$family"
done)"
[[ -z "$unused" ]] || fail "metrics not shown on the dashboard: $(tr '\n' ' ' <<<"$unused")"
log "ok"
