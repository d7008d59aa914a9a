# Shared by demo.sh, test.sh and bench.sh: install what is missing, then
# configure and build build/ incrementally in Release mode.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${ASTEROID_BUILD_DIR:-$ROOT/build}"

# Debian 12 packages the project builds and runs with.
PACKAGES=(
  build-essential cmake pkg-config
  libcaf-dev libtorch-dev capnproto libcapnp-dev
  libboost-dev libboost-system-dev libboost-context-dev libspdlog-dev libgtest-dev
  nlohmann-json3-dev libcli11-dev zlib1g-dev libssl-dev
  dataset-fashion-mnist iproute2 python3-torch python3-matplotlib
  # the service's tests: a real Prometheus server (and promtool), headless
  # Chromium for the dashboard, curl for the README's commands
  prometheus chromium curl
)

ensure_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "Missing Debian packages: ${missing[*]}" >&2
    echo "Install them with:" >&2
    echo "  sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y ${missing[*]}" >&2
    exit 2
  fi
  echo "Installing missing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
}

build() {
  local jobs
  jobs="$(nproc 2>/dev/null || echo 2)"
  if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
    cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release
  fi
  cmake --build "$BUILD_DIR" -j "$jobs" "$@"
}
