#!/usr/bin/env bash
# Plans from predicted profiles (docs/planner.md, "Predicted profiles";
# README): on one emulated cluster per preset and model, `asteroid train`
# profiles all seven batch sizes or 3 or 2 of them (the latency predictor
# completing the rest), plans and trains 100 rounds; the table compares the
# plans' measured throughput. Writes bench/results/predictor-plans-<date>/
# plans.{json,md}. Extra arguments go to bench/predictor/plans.py (--cases,
# --points, --rounds). About 10 min.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
ensure_packages
build --target asteroid
out="$ROOT/bench/results/predictor-plans-$(date -u +%Y%m%d-%H%M)"
exec /usr/bin/python3 "$ROOT/bench/predictor/plans.py" --asteroid "$BUILD_DIR/bin/asteroid" --out "$out" "$@"
