#!/usr/bin/env bash
# Prepares a user for rootless Podman integration tests (run as root; idempotent; `make test` calls it).
#
# What it does, and why each step is the narrowest one that works:
#   1. creates the system user `cloudless-test` (locked password, nologin shell, a home for its image store);
#   2. gives it a subordinate uid/gid range in /etc/subuid and /etc/subgid (the user namespace needs one);
#   3. lets it open /dev/net/tun (slirp4netns needs it for rootless networking and published ports). If the
#      device is already world-usable (Debian's default 0666) nothing changes. Otherwise, with `setfacl`
#      available, only this user gets an ACL entry; without it, the device's group becomes the dedicated
#      group `cloudless-tun` (only this user in it) and the group gets rw. Root-only access is otherwise
#      kept: nobody else gains access. /dev is a devtmpfs, so this is undone at reboot (rerun the script);
#   4. creates its XDG_RUNTIME_DIR, /run/user/<uid> (owned by it, 0700), as a login session would;
#   5. runs `podman system migrate` as the user and imports the busybox test image into its storage
#      (scripts/build-test-image.sh as that user).
# Usage: setup-rootless.sh            Environment: CLOUDLESS_TEST_USER (default cloudless-test)
set -euo pipefail

USER_NAME="${CLOUDLESS_TEST_USER:-cloudless-test}"
TUN_GROUP="cloudless-tun"
SUB_COUNT=65536
SUB_MIN_START=200000
here="$(cd "$(dirname "$0")" && pwd)"
say() { echo "setup-rootless: $*"; }

[ "$(id -u)" -eq 0 ] || { echo "error: run as root (it creates a user and edits /etc/subuid)" >&2; exit 1; }
command -v podman >/dev/null 2>&1 || { echo "error: podman missing; run scripts/install-system-deps.sh" >&2; exit 1; }
command -v newuidmap >/dev/null 2>&1 || { echo "error: newuidmap missing (Debian uidmap); run scripts/install-system-deps.sh" >&2; exit 1; }

# 1. the user
if id -u "$USER_NAME" >/dev/null 2>&1; then
  say "user $USER_NAME exists"
else
  useradd --system --create-home --home-dir "/home/$USER_NAME" --shell /usr/sbin/nologin \
    --comment "Cloudless rootless Podman tests" "$USER_NAME"
  say "created user $USER_NAME (locked password, nologin shell)"
fi
uid="$(id -u "$USER_NAME")"
home="$(getent passwd "$USER_NAME" | cut -d: -f6)"
[ -d "$home" ] || { mkdir -p "$home"; chown "$USER_NAME:" "$home"; chmod 0700 "$home"; say "created $home"; }

# 2. subordinate ids: keep an existing entry, else append the first free range at or above SUB_MIN_START
next_free_start() {  # $1 = file; prints a start that overlaps no existing range
  local start=$SUB_MIN_START
  touch "$1"
  while IFS=: read -r _ s n; do
    [[ "$s" =~ ^[0-9]+$ && "$n" =~ ^[0-9]+$ ]] || continue
    if (( s + n > start && s < start + SUB_COUNT )); then start=$(( s + n )); fi
  done < <(sort -t: -k2,2n "$1")
  echo "$start"
}
for f in /etc/subuid /etc/subgid; do
  if grep -qE "^($USER_NAME|$uid):" "$f" 2>/dev/null; then
    say "$f: $(grep -E "^($USER_NAME|$uid):" "$f" | head -1) (kept)"
  else
    start="$(next_free_start "$f")"
    echo "$USER_NAME:$start:$SUB_COUNT" >> "$f"
    say "$f: added $USER_NAME:$start:$SUB_COUNT"
  fi
done

# 3. /dev/net/tun for slirp4netns
tun=/dev/net/tun
if [ ! -e "$tun" ]; then
  mkdir -p /dev/net && mknod -m 0600 "$tun" c 10 200 && say "created $tun (0600 root)"
fi
if runuser -u "$USER_NAME" -- test -r "$tun" -a -w "$tun"; then
  say "$tun already usable by $USER_NAME ($(stat -c '%A %U:%G' "$tun"); unchanged)"
elif command -v setfacl >/dev/null 2>&1 && setfacl -m "u:$USER_NAME:rw" "$tun" 2>/dev/null \
    && runuser -u "$USER_NAME" -- test -r "$tun" -a -w "$tun"; then
  say "$tun: ACL entry u:$USER_NAME:rw added (mode and group unchanged)"
else
  getent group "$TUN_GROUP" >/dev/null || { groupadd --system "$TUN_GROUP"; say "created group $TUN_GROUP"; }
  id -nG "$USER_NAME" | tr ' ' '\n' | grep -qx "$TUN_GROUP" || usermod -aG "$TUN_GROUP" "$USER_NAME"
  chgrp "$TUN_GROUP" "$tun" && chmod g+rw "$tun"
  say "$tun: group $TUN_GROUP (members: $USER_NAME) gets rw -> $(stat -c '%A %U:%G' "$tun")"
fi

# 4. XDG_RUNTIME_DIR
run_dir="/run/user/$uid"
mkdir -p "$run_dir"
chown "$USER_NAME:" "$run_dir"
chmod 0700 "$run_dir"
say "XDG_RUNTIME_DIR=$run_dir (owner $USER_NAME, 0700)"

# 5. podman state and the test image, from files the user can read (copied when the repo is not readable)
conf="$here/containers.conf"
build="$here/build-test-image.sh"
if ! runuser -u "$USER_NAME" -- test -r "$conf" -a -r "$build"; then
  tmp="$(mktemp -d /tmp/cloudless-rootless.XXXXXX)"
  cp "$conf" "$build" "$tmp/"
  chmod 0755 "$tmp"; chmod 0644 "$tmp"/*
  conf="$tmp/containers.conf"; build="$tmp/build-test-image.sh"
  say "repo not readable by $USER_NAME: using copies in $tmp"
fi
as_user() {
  (cd / && runuser -u "$USER_NAME" -- env -i PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin HOME="$home" \
    USER="$USER_NAME" LOGNAME="$USER_NAME" XDG_RUNTIME_DIR="$run_dir" CONTAINERS_CONF="$conf" "$@")
}
# A Podman service left running by an interrupted test run still lives in the user namespace that
# `podman system migrate` is about to replace: containers created through it would be unreachable (their network
# namespaces invisible) from the new one. The user exists only for tests: stop its leftovers first.
if pkill -u "$USER_NAME" -f "podman system service" 2>/dev/null; then
  sleep 1
  say "stopped leftover podman services of $USER_NAME"
fi
as_user podman system migrate
say "podman system migrate done as $USER_NAME"
# The user exists only for tests: containers left by an interrupted run are removed, so a stale one (e.g. whose
# network namespace vanished with an earlier rootless pause process) cannot break `podman ps` for the next run.
left="$(as_user podman ps -aq 2>/dev/null | wc -l)"
if [ "$left" -gt 0 ]; then
  as_user podman rm -af -t 0 >/dev/null 2>&1 || true
  say "removed $left leftover test container(s) of $USER_NAME"
fi
as_user bash "$build" | sed "s/^/setup-rootless: [$USER_NAME] /"
say "rootless check: $(as_user podman info --format 'rootless={{.Host.Security.Rootless}} graphDriver={{.Store.GraphDriverName}} cgroupManager={{.Host.CgroupManager}}')"
say "done: run as $USER_NAME with XDG_RUNTIME_DIR=$run_dir CONTAINERS_CONF=$conf"
