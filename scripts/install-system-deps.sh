#!/usr/bin/env bash
# Installs the Debian packages the test suite and `make up` rely on, only when missing.
# Safe to run repeatedly; does nothing when everything is present. Needs root (or sudo) on Debian/Ubuntu.
set -euo pipefail

PACKAGES=(podman runc uidmap slirp4netns fuse-overlayfs mosquitto mosquitto-clients busybox-static iproute2 iptables procps
          iputils-ping curl python3-venv diffutils findutils util-linux dash
          qemu-user-static debootstrap binfmt-support zstd
          etcd-server)

source "$(dirname "$0")/apt-missing.sh"
install_missing "system packages" "${PACKAGES[@]}"
# Only for what this run installed (a service the user already had is theirs to keep):
# Debian starts a system-wide mosquitto on :1883; tests run their own private instances.
# Likewise etcd-server enables a single-member etcd on :2379/:2380; the etcd tests start their own 3-member
# clusters on free loopback ports, and a stray member would only confuse an operator's `etcdctl`.
if command -v systemctl >/dev/null 2>&1; then
  for pair in mosquitto:mosquitto etcd-server:etcd; do
    if [[ " ${missing[*]} " == *" ${pair%%:*} "* ]]; then
      ${SUDO:-} systemctl disable --now "${pair##*:}" >/dev/null 2>&1 || true
    fi
  done
fi
