#!/usr/bin/env bash
# Builds localhost/cloudless/busybox:latest from Debian's busybox-static with `podman import` (no registry).
# Usage: build-test-image.sh [--force]   (idempotent: skips when the image exists)
set -euo pipefail
IMAGE="localhost/cloudless/busybox:latest"
VERSION=2  # bumped when the image's contents change (2: nslookup for the services tests): an older image is rebuilt
here="$(cd "$(dirname "$0")" && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/containers.conf}"

if ! command -v podman >/dev/null 2>&1; then
  echo "error: podman is not installed; run scripts/install-system-deps.sh first" >&2; exit 1
fi
if [ "${1:-}" != "--force" ] && podman image exists "$IMAGE" 2>/dev/null; then
  have="$(podman image inspect --format '{{index .Config.Labels "cloudless.test-image"}}' "$IMAGE" 2>/dev/null || true)"
  if [ "$have" = "$VERSION" ]; then echo "test image: $IMAGE present"; exit 0; fi
  echo "test image: $IMAGE is version ${have:-1}, want $VERSION: rebuilding"
fi
busybox=/bin/busybox  # Debian's busybox-static installs a static binary here (the image has no libc)
[ -x "$busybox" ] || { echo "error: $busybox missing; run scripts/install-system-deps.sh" >&2; exit 1; }
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
mkdir -p "$work/rootfs/bin" "$work/rootfs/tmp" "$work/rootfs/www" "$work/rootfs/etc"
cp "$busybox" "$work/rootfs/bin/busybox"
for c in sh echo sleep cat ls wget httpd nc id touch mkdir rm env ps kill true false grep head tail date hostname nslookup; do
  ln -sf busybox "$work/rootfs/bin/$c"
done
echo "cloudless test image" > "$work/rootfs/www/index.html"
echo "root:x:0:0:root:/root:/bin/sh" > "$work/rootfs/etc/passwd"
echo "nobody:x:65534:65534:nobody:/:/bin/sh" >> "$work/rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$work/rootfs/etc/group"
chmod 1777 "$work/rootfs/tmp"
tar -C "$work/rootfs" -cf "$work/busybox.tar" .
podman import --change 'CMD ["/bin/sh"]' --change "LABEL cloudless.test-image=$VERSION" "$work/busybox.tar" \
  "$IMAGE" >/dev/null
echo "test image: built $IMAGE"
