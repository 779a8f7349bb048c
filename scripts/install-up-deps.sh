#!/usr/bin/env bash
# Installs the Debian packages `make up` needs, only when missing: rootless Podman for the local agent and
# busybox-static for the local test image (scripts/build-test-image.sh). Nothing else: `cloudless up` runs its
# own embedded broker and SQLite store, so no mosquitto and no etcd. It never starts, stops, enables or disables
# a service (a Home Assistant box keeps its own broker on :1883 running; `cloudless up --mqtt-port` avoids it).
# Safe to run repeatedly; does nothing when everything is present. Needs root (or sudo) on Debian/Ubuntu.
# `make test` uses scripts/install-system-deps.sh instead (brokers, etcd, qemu for the labs).
set -euo pipefail

PACKAGES=(podman runc uidmap slirp4netns fuse-overlayfs busybox-static)

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "up packages: not a Debian-like system; install rootless Podman yourself (or run: cloudless up --agent-runtime process)"
  exit 0
fi
source "$(dirname "$0")/apt-missing.sh"
install_missing "up packages" "${PACKAGES[@]}"
