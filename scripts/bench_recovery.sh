#!/usr/bin/env bash
# Recovery benchmark (docs/runtime.md, README): on emulated env C with
# fmnist-cnn, a killed single-device stage and a killed group member, with
# the lightweight re-plan, the heavy re-plan and stop-and-restart from the
# last checkpoint. Writes bench/results/recovery-<date>/recovery.{json,md}.
# Extra arguments go to bench/recovery/recovery.py (--rounds, --kill-at, ...).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
ensure_packages
build --target asteroid
out="$ROOT/bench/results/recovery-$(date -u +%Y%m%d-%H%M)"
exec /usr/bin/python3 "$ROOT/bench/recovery/recovery.py" --asteroid "$BUILD_DIR/bin/asteroid" --out "$out" "$@"
