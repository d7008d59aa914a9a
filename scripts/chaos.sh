#!/usr/bin/env bash
# A seeded chaos campaign (docs/runtime.md "Chaos campaigns"): one long
# training on emulated env C under a random schedule of faults, judged against
# a fault-free run of the same job. Default: 50 faults, seed 1; any
# `asteroid chaos` flag may follow (--faults N --seed S --env E ...).
# Writes bench/results/chaos-<date>/ (report.md, report.json, both runs).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
ensure_packages
build --target asteroid
out="$ROOT/bench/results/chaos-$(date -u +%Y%m%d-%H%M)"
args=("$@")
[[ " $* " == *" --faults "* ]] || args+=(--faults 50)
[[ " $* " == *" --seed "* ]] || args+=(--seed 1)
[[ " $* " == *" --out "* ]] || args+=(--out "$out")
exec "$BUILD_DIR/bin/asteroid" chaos "${args[@]}"
