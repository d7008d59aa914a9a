#!/usr/bin/env bash
# Installs missing packages, builds, and runs the whole GoogleTest suite
# through ctest. Exits non-zero on any failure. Extra arguments go to ctest
# (e.g. scripts/test.sh -R planner).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
ensure_packages
build
cd "$BUILD_DIR"
ctest --output-on-failure --timeout 900 -j "$(nproc 2>/dev/null || echo 2)" "$@"
