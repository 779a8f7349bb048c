#!/usr/bin/env bash
# Installs the Debian packages the test suite and `make up` rely on, only when missing.
# Safe to run repeatedly; does nothing when everything is present. Needs root (or sudo) on Debian/Ubuntu.
set -euo pipefail

PACKAGES=(podman runc uidmap slirp4netns fuse-overlayfs mosquitto mosquitto-clients busybox-static iproute2 iptables procps
          iputils-ping
          qemu-user-static debootstrap binfmt-support zstd
          etcd-server)

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "system packages: all present"
  exit 0
fi

echo "system packages: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "error: need root to install ${missing[*]}; run: sudo $0" >&2; exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
# Debian starts a system-wide mosquitto on :1883; tests run their own private instances.
if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now mosquitto >/dev/null 2>&1 || true; fi
# Likewise etcd-server enables a single-member etcd on :2379/:2380; the etcd tests start their own 3-member
# clusters on free loopback ports, and a stray member would only confuse an operator's `etcdctl`.
if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now etcd >/dev/null 2>&1 || true; fi
echo "system packages: done"
