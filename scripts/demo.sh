#!/usr/bin/env bash
# Installs missing packages, builds, and runs the main job: `asteroid train`
# with its embedded defaults. Extra arguments go to `asteroid train`.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
ensure_packages
build --target asteroid
exec "$BUILD_DIR/bin/asteroid" train "$@"
