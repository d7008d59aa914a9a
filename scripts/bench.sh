#!/usr/bin/env bash
# End-to-end benchmark (docs/benchmarks.md): hpp against dp, pp, the best
# single device and PyTorch DDP on the emulated clusters. Installs missing
# Debian packages, builds asteroid and bench_planner, then runs
# bench/report/bench.py with Debian's Python (python3-torch, matplotlib).
#
#   scripts/bench.sh --quick        # env C and D at 100 Mbit/s and C at 1000, fmnist-cnn and fmnist-resnet (< 15 min)
#   scripts/bench.sh --full         # envs A-D x 100/1000 Mbit/s x 5 models + time to accuracy (hours)
#   scripts/bench.sh --tta-only     # fmnist-cnn to 85 % on env C
#   scripts/bench.sh --report DIR   # table and plots again from DIR/results.json
#
# Other options: bench/report/bench.py --help. ASTEROID_BUILD_DIR picks the
# build directory (default build/). Emulation needs root (cgroups, network
# namespaces); without it the testbed falls back to its throttle and relay.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
if [ "${1:-}" != "--report" ]; then
  ensure_packages
  build --target asteroid bench_planner
fi
[ $# -eq 0 ] && set -- --quick
exec /usr/bin/python3 "$ROOT/bench/report/bench.py" --asteroid "$BUILD_DIR/bin/asteroid" "$@"
