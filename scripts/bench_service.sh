#!/usr/bin/env bash
# Service soak (docs/service.md, "Memory over many jobs"): 40 small jobs
# through `asteroid serve` on three local nodes, the service's and the
# nodes' resident memory after each. Writes bench/results/service-<date>/.
# Extra arguments go to bench/service/soak.py (--jobs, --rounds, ...).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
ensure_packages
build --target asteroid
out="$ROOT/bench/results/service-$(date -u +%Y%m%d-%H%M)"
exec /usr/bin/python3 "$ROOT/bench/service/soak.py" --asteroid "$BUILD_DIR/bin/asteroid" --out "$out" "$@"
