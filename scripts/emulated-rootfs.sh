#!/usr/bin/env bash
# Builds (once) and caches a Debian bookworm root filesystem for an emulated Raspberry Pi OS device.
#
#   scripts/emulated-rootfs.sh arm64|armhf      -> prints the path of the cached tarball
#
# The tarball holds what a fresh Raspberry Pi OS Lite already has or what scripts/install-agent.sh would apt-get
# there (python3, python3-venv, Debian's psutil/msgpack/cffi for armhf, curl, ca-certificates), so a rerun costs an
# extraction instead of a debootstrap (~3.5 min per architecture here). The foreign binaries run through
# qemu-user-static: binfmt_misc is mounted and the qemu interpreters registered with the F (fix-binary) flag when they
# are not, so a chroot needs no qemu binary inside it.
#
# Cache: ${CLOUDLESS_ROOTFS_CACHE:-/var/cache/cloudless/rootfs}/bookworm-ARCH-<hash of the package list>.tar.zst:
# outside the checkout, so a fresh clone on the same machine (CI) reuses it; a changed package list builds anew.
# Delete it to rebuild.
# Needs root, debootstrap, qemu-user-static and zstd (scripts/install-system-deps.sh installs them).
set -euo pipefail

ARCH="${1:-}"
case "$ARCH" in
  arm64) QEMU=aarch64 ;;
  armhf) QEMU=arm ;;
  *) echo "usage: $0 arm64|armhf" >&2; exit 2 ;;
esac

REPO="$(cd "$(dirname "$0")/.." && pwd)"
MIRROR="${CLOUDLESS_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PACKAGES="python3,python3-venv,python3-psutil,python3-msgpack,python3-cffi,python3-ply,curl,ca-certificates,procps"
CACHE="${CLOUDLESS_ROOTFS_CACHE:-/var/cache/cloudless/rootfs}"
OUT="$CACHE/bookworm-$ARCH-$(printf '%s' "$PACKAGES" | sha256sum | cut -c1-12).tar.zst"

if [ "$(id -u)" -ne 0 ]; then echo "error: $0 needs root (debootstrap, binfmt_misc)" >&2; exit 1; fi
for tool in debootstrap zstd; do
  command -v "$tool" >/dev/null || { echo "error: $tool missing; run scripts/install-system-deps.sh" >&2; exit 1; }
done
[ -x "/usr/bin/qemu-$QEMU-static" ] || { echo "error: qemu-$QEMU-static missing; run scripts/install-system-deps.sh" >&2; exit 1; }

# binfmt_misc: mounted on demand (it is not by default in a container), interpreter registered with flags F (open the
# interpreter now, so it works inside a chroot) and P (preserve argv[0]), as Debian's qemu-user-static describes it.
register_binfmt() {
  if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  fi
  if [ -e "/proc/sys/fs/binfmt_misc/qemu-$QEMU" ]; then return 0; fi
  local spec=/usr/share/binfmts/qemu-$QEMU magic mask
  magic="$(sed -n 's/^magic //p' "$spec")"
  mask="$(sed -n 's/^mask //p' "$spec")"
  printf ':qemu-%s:M:0:%s:%s:/usr/bin/qemu-%s-static:FP\n' "$QEMU" "$magic" "$mask" "$QEMU" \
    > /proc/sys/fs/binfmt_misc/register
}
register_binfmt

if [ -s "$OUT" ]; then echo "$OUT"; exit 0; fi

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock-$ARCH"
flock 9
if [ -s "$OUT" ]; then echo "$OUT"; exit 0; fi   # built by a concurrent caller while we waited

WORK="$(mktemp -d "$CACHE/build-$ARCH.XXXXXX")"
cleanup() { umount -l "$WORK/root/proc" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
started=$(date +%s)
echo "emulated-rootfs: debootstrap bookworm $ARCH (a few minutes, once)" >&2
debootstrap --arch="$ARCH" --variant=minbase --include="$PACKAGES" bookworm "$WORK/root" "$MIRROR" \
  > "$WORK/debootstrap.log" 2>&1 || { tail -30 "$WORK/debootstrap.log" >&2; exit 1; }
chroot "$WORK/root" apt-get clean
rm -rf "$WORK/root/var/lib/apt/lists/"* "$WORK/root/var/cache/apt/"*.bin
tar -C "$WORK/root" --numeric-owner -cf - . | zstd -q -T0 -3 -o "$WORK/rootfs.tar.zst"
mv "$WORK/rootfs.tar.zst" "$OUT"
echo "emulated-rootfs: $ARCH built in $(( $(date +%s) - started )) s" >&2
echo "$OUT"
