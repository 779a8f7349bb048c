#!/usr/bin/env bash
# Fills the coordinator's dependency wheelhouse for devices that cannot reach the package index themselves.
#
#   scripts/agent-wheelhouse.sh [aarch64] [armv7l] [x86_64]      (default: aarch64 armv7l)
#
# The coordinator serves every wheel in <repo>/.cache/wheelhouse next to the agent's own wheel
# (GET /v1/install/wheels, coordinator/rest/install.py) and scripts/install-agent.sh installs from them first. Only
# binary wheels for CPython 3.11 (Debian bookworm, Raspberry Pi OS 12):
#   aarch64, x86_64: paho-mqtt, msgpack, psutil, cryptography (+cffi, pycparser) and the overlay's aioquic with its
#                    dependencies;
#   armv7l:          paho-mqtt and cryptography 46.0.0 only — psutil, msgpack and cffi come from Debian
#                    (python3-psutil, python3-msgpack, python3-cffi 1.15; later cryptography needs cffi >= 2) and
#                    aioquic has no armv7l wheel.
# Idempotent: pip skips what is there. Needs network access to the package index on this machine.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${CLOUDLESS_CACHE:-$REPO/.cache}/wheelhouse"
PY="${PYTHON:-$REPO/.venv/bin/python}"
[ -x "$PY" ] || PY=python3
mkdir -p "$OUT"
[ -e "$OUT/../.gitignore" ] || echo "*" > "$OUT/../.gitignore"

download() {  # platform, then requirements
  local platform="$1"; shift
  "$PY" -m pip download --quiet --disable-pip-version-check --only-binary=:all: --implementation cp \
    --python-version 3.11 --abi cp311 --abi abi3 --abi none --platform "$platform" -d "$OUT" "$@"
}

[ $# -gt 0 ] || set -- aarch64 armv7l
for arch in "$@"; do
  case "$arch" in
    aarch64|x86_64) download "manylinux2014_$arch" "paho-mqtt>=2.1,<3" "msgpack>=1.0" "psutil>=5.9" \
                      "cryptography>=42" "aioquic==1.7.2" ;;
    armv7l) download manylinux_2_31_armv7l --no-deps "paho-mqtt>=2.1,<3" "cryptography==46.0.0" ;;
    *) echo "usage: $0 [aarch64] [armv7l] [x86_64]" >&2; exit 2 ;;
  esac
done
ls "$OUT"
