#!/usr/bin/env bash
# A seeded chaos campaign (docs/runtime.md "Chaos campaigns"): one long
# training on emulated env C under a random schedule of faults, judged against
# a fault-free run of the same job on the same plans. Default: 50 faults,
# seed 1; any `asteroid chaos` flag may follow (--faults N --seed S --env E ...).
# The campaign's folder is runs/chaos-<date>/ (both run folders); its report
# (report.md, report.json, faults.json, plan-switches.json) is copied to
# bench/results/chaos-<date>/.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
ensure_packages
build --target asteroid
stamp="$(date -u +%Y%m%d-%H%M)"
out="$ROOT/runs/chaos-$stamp"
args=("$@")
[[ " $* " == *" --faults "* ]] || args+=(--faults 50)
[[ " $* " == *" --seed "* ]] || args+=(--seed 1)
[[ " $* " == *" --out "* ]] || args+=(--out "$out")
status=0
"$BUILD_DIR/bin/asteroid" chaos "${args[@]}" || status=$?
if [ -f "$out/report.json" ]; then
  mkdir -p "$ROOT/bench/results/chaos-$stamp"
  cp "$out"/report.md "$out"/report.json "$out"/faults.json "$out"/plan-switches.json "$ROOT/bench/results/chaos-$stamp/"
  echo "report copied to bench/results/chaos-$stamp/"
fi
exit "$status"
