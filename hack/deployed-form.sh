#!/usr/bin/env bash
# The deployed form in `make test` (what CI runs): the images test (`make images-test`)
# and the pods e2e (`make e2e-pods`), when the run so far leaves room for them.
#
# On a warm machine (tools cached) they add about 15 minutes to `make test`; on a cold
# one, building Docker's packages, kubelet/kube-proxy/kube-scheduler, the release images
# and the parts' images adds about 20 more on top of the cold build of everything else,
# which would take CI's run past the hour it is kept under. So: when `make test` has
# already run longer than $MLA_DEPLOYED_FORM_AFTER seconds (default 1800: a cold
# machine), this says so, with what to run by hand, and does not run them; otherwise it
# runs both. MLA_DEPLOYED_FORM=always|never overrides.
set -euo pipefail
cd "$(dirname "$0")/.."

started="${MLA_TEST_STARTED:-$(date +%s)}"
elapsed=$(( $(date +%s) - started ))
after="${MLA_DEPLOYED_FORM_AFTER:-1800}"
mode="${MLA_DEPLOYED_FORM:-auto}"

if [[ "$mode" == never ]] || { [[ "$mode" == auto ]] && (( elapsed > after )); }; then
  echo "deployed form NOT run: this run took ${elapsed} s so far (a cold machine: more than ${after} s);"
  echo "cold, it adds about 20 minutes. Run it with: make images-test e2e-pods"
  exit 0
fi
echo "deployed form: this run took ${elapsed} s so far; running make images-test e2e-pods"
make --no-print-directory images-test e2e-pods
