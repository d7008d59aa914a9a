#!/usr/bin/env bash
# Adaptive training benchmark (docs/runtime.md, "Adaptive training"; README):
# on emulated env C at 1000 Mbit/s with fmnist-resnet, the NX-class device and
# then a Nano-class one slowed to 0.3 of their CPU at round 100 and restored
# at round 250, with --adapt on, --adapt off and a fresh plan for the slowed
# cluster. Writes bench/results/adapt-<date>/adapt.{json,md}. Extra arguments
# go to bench/adapt/adapt.py (--devices, --rounds, --share, ...).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
ensure_packages
build --target asteroid
out="$ROOT/bench/results/adapt-$(date -u +%Y%m%d-%H%M)"
exec /usr/bin/python3 "$ROOT/bench/adapt/adapt.py" --asteroid "$BUILD_DIR/bin/asteroid" --out "$out" "$@"
