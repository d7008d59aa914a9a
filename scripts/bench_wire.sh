#!/usr/bin/env bash
# Accuracy of the compressed wire (docs/planner.md "Compressed wire"): one
# epoch of fmnist-cnn and fmnist-resnet on three local nodes for every wire
# policy, its lossiest codec on the boundary and the all-reduce, against the
# exact wire. Writes bench/results/wire-accuracy-<date>/accuracy.{json,md}
# and loss.png (about 12 min on 2 cores). Extra arguments go to
# bench/wire/accuracy.py (--models, --policies, --rounds).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
ensure_packages
build --target asteroid
out="$ROOT/bench/results/wire-accuracy-$(date -u +%Y%m%d-%H%M)"
exec /usr/bin/python3 "$ROOT/bench/wire/accuracy.py" --asteroid "$BUILD_DIR/bin/asteroid" --out "$out" "$@"
