#!/usr/bin/env bash
# What mutual TLS costs (docs/security.md, "What TLS costs"): the transport
# benchmark (CAF with and without TLS, and a plain socket), then the
# default job on env C at 1000 Mbit/s with and without TLS, the same plan
# trained alternately on both (bench/tls/compare.py). Writes
# bench/results/tls-<date>/. About 10 minutes.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
ensure_packages
build --target asteroid bench_transport
out="$ROOT/bench/results/tls-$(date -u +%Y%m%d-%H%M)"
mkdir -p "$out"
"$BUILD_DIR/bin/bench_transport" | tee "$out/transport.md"
/usr/bin/python3 "$ROOT/bench/tls/compare.py" --asteroid "$BUILD_DIR/bin/asteroid" --out "$out" "$@" | tee "$out/job.md"
