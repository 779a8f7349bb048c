#!/bin/sh
# Cloudless device install: the agent in a venv, enrolled, running as a service. POSIX sh (dash, busybox, Termux).
#
# Served by the coordinator at /v1/install.sh; `cloudless token create --join-command` prints the line that runs it:
#   curl -fsSk --pinnedpubkey 'sha256//KEY' https://COORD:8470/v1/install.sh | sh -s -- --pin 'sha256//KEY' --token T
#
#   --token T | --token-file F   enrolment token (first install; a device already enrolled keeps its identity)
#   --node-id N                  node id (default: the hostname)
#   --pin sha256//KEY            the API certificate's key; every download from the coordinator is pinned to it
#   --server URL                 the coordinator (default: the one this script was fetched from)
#   --runtime process|podman     workload runtime (default: process; podman with --containers)
#   --containers                 install rootless Podman (Debian) and run containers
#   --no-overlay                 do not try the QUIC overlay (aioquic)
#   --restart                    restart the installed agent
#   --uninstall [--purge]        stop and remove the agent (venv, service); --purge also deletes its identity and data
#
# What it does, per device: Debian / Raspberry Pi OS (aarch64, armv7l, x86_64): apt-get only what is missing
# (python3-venv; python3-psutil, python3-msgpack and python3-cffi on armv7l, which has no wheels for them); Termux:
# pkg install python python-cryptography python-psutil. A venv (--system-site-packages where Debian's or Termux's
# packages are used), the project's wheel from the coordinator (never `pip install cloudless`: that name on the public
# index is another project), the `overlay` extra when aioquic installs without a compiler, enrolment, then a systemd
# user unit with linger (a Termux:Boot script with termux-wake-lock on Termux; where there is no systemd, e.g. a
# chroot, a supervised background process with pid files). Running it again changes nothing and keeps the identity.
set -eu

SERVER="${CLOUDLESS_SERVER:-}"
PIN="" TOKEN="" TOKEN_FILE="" NODE_ID="" RUNTIME="" CONTAINERS=0 OVERLAY=1 ACTION=install PURGE=0

say() { printf 'cloudless-install: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --token) TOKEN="${2:?--token needs a value}"; shift 2 ;;
    --token-file) TOKEN_FILE="${2:?--token-file needs a value}"; shift 2 ;;
    --node-id) NODE_ID="${2:?--node-id needs a value}"; shift 2 ;;
    --pin) PIN="${2:?--pin needs a value}"; shift 2 ;;
    --server) SERVER="${2:?--server needs a value}"; shift 2 ;;
    --runtime) RUNTIME="${2:?--runtime needs a value}"; shift 2 ;;
    --containers) CONTAINERS=1; shift ;;
    --no-overlay) OVERLAY=0; shift ;;
    --restart) ACTION=restart; shift ;;
    --uninstall) ACTION=uninstall; shift ;;
    --purge) PURGE=1; shift ;;
    -h|--help) sed -n '2,22p' "$0" 2>/dev/null || true; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

# ---- where things live (per user: no root needed after the packages) -------------------------------------------
OS=debian
case "${PREFIX:-}" in */com.termux/*) OS=termux ;; esac
[ -n "${TERMUX_VERSION:-}" ] && OS=termux
HOME="${HOME:-/root}"
BASE="${CLOUDLESS_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/cloudless}"
VENV="$BASE/venv"
DATA="$BASE/agent"
RUN="$BASE/run"
UNIT_DIR="$HOME/.config/systemd/user"  # where the user's systemd manager looks (not the caller's XDG_CONFIG_HOME)
UNIT="$UNIT_DIR/cloudless-agent.service"
BOOT="$HOME/.termux/boot/cloudless-agent"
SUPERVISOR="$BASE/bin/cloudless-agent-supervise"
# the shell our scripts run with: Termux has no /bin/sh (its sh is in $PREFIX/bin; Termux:Boot runs scripts directly)
SH=/bin/sh
[ "$OS" = termux ] && SH="${PREFIX:-/data/data/com.termux/files/usr}/bin/sh"
# systemd is running when this directory exists (what sd_booted() checks); tests point it at a directory of their own
SYSTEMD_RUN_DIR="${CLOUDLESS_SYSTEMD_RUN_DIR:-/run/systemd/system}"

has_systemd() { [ "$OS" = debian ] && [ -d "$SYSTEMD_RUN_DIR" ] && command -v systemctl >/dev/null 2>&1; }
user_bus() {  # `systemctl --user` needs the user manager's bus: where it is when the caller's session did not say
  XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/run/user/$(id -u)}"
  export XDG_RUNTIME_DIR
}

# ---- service control -------------------------------------------------------------------------------------------
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_service() {
  if has_systemd && [ -f "$UNIT" ]; then
    user_bus
    systemctl --user disable --now cloudless-agent.service >/dev/null 2>&1 || true
  fi
  if alive "$RUN/supervisor.pid"; then kill "$(cat "$RUN/supervisor.pid")" 2>/dev/null || true; fi
  i=0
  while { alive "$RUN/supervisor.pid" || alive "$RUN/agent.pid"; } && [ $i -lt 40 ]; do sleep 0.25; i=$((i + 1)); done
  if alive "$RUN/agent.pid"; then kill -9 "$(cat "$RUN/agent.pid")" 2>/dev/null || true; fi
  rm -f "$RUN/supervisor.pid" "$RUN/agent.pid"
}

start_supervised() {
  if alive "$RUN/supervisor.pid"; then return 0; fi
  mkdir -p "$RUN"
  # setsid: the supervisor outlives this script and the terminal; it restarts the agent 2 s after any exit
  if command -v setsid >/dev/null 2>&1; then setsid "$SUPERVISOR" </dev/null >/dev/null 2>&1 &
  else nohup "$SUPERVISOR" </dev/null >/dev/null 2>&1 & fi
  i=0
  while ! alive "$RUN/agent.pid" && [ $i -lt 40 ]; do sleep 0.25; i=$((i + 1)); done
  alive "$RUN/agent.pid" || die "the agent did not start; see $BASE/agent.log"
}

stop_workloads() {  # the process runtime's workloads outlive the agent by design (it re-adopts them); not here
  for run in "$DATA"/process/*/run.json; do
    [ -f "$run" ] || continue
    pgid="$(sed -n 's/.*"pid": *\([0-9][0-9]*\).*/\1/p' "$run")"
    [ -n "$pgid" ] && kill -TERM "-$pgid" 2>/dev/null || continue  # each runs in its own session (pgid = pid)
    i=0
    while kill -0 "-$pgid" 2>/dev/null && [ $i -lt 20 ]; do sleep 0.25; i=$((i + 1)); done
    kill -KILL "-$pgid" 2>/dev/null || true
  done
  if [ "$RUNTIME_INSTALLED" = podman ] && command -v podman >/dev/null 2>&1; then
    say "containers the agent started keep running under Podman: list them with \`podman ps\`"
  fi
}

if [ "$ACTION" = uninstall ]; then
  RUNTIME_INSTALLED="$(sed -n 's/.*--runtime \([a-z]*\).*/\1/p' "$SUPERVISOR" "$UNIT" 2>/dev/null | head -n1)"
  stop_service
  stop_workloads
  if [ "$OS" = termux ] && [ -f "$BOOT" ] && command -v termux-wake-unlock >/dev/null 2>&1; then
    termux-wake-unlock || true  # the lock the install took for the agent
  fi
  rm -f "$UNIT" "$BOOT" "$SUPERVISOR"
  if has_systemd; then user_bus; systemctl --user daemon-reload >/dev/null 2>&1 || true; fi
  rm -rf "$VENV" "$RUN" "$BASE/bin" "$BASE/wheels" "$BASE/installed"
  if [ "$PURGE" = 1 ]; then
    rm -rf "$BASE"
    say "uninstalled; identity and data deleted (the node stays listed until \`cloudless delete node\`)"
  else
    say "uninstalled; the node's identity and data are kept in $DATA (--uninstall --purge deletes them)"
  fi
  exit 0
fi

if [ "$ACTION" = restart ]; then
  [ -x "$VENV/bin/cloudless" ] || die "the agent is not installed here"
  if has_systemd && [ -f "$UNIT" ]; then user_bus; systemctl --user restart cloudless-agent.service
  else stop_service; start_supervised; fi
  say "agent restarted"
  exit 0
fi

# ---- checks ----------------------------------------------------------------------------------------------------
[ -n "$SERVER" ] || die "no coordinator: pass --server https://HOST:PORT (or fetch this script from the coordinator)"
case "$SERVER" in https://*) ;; *) die "--server must be an https:// URL, got $SERVER" ;; esac
case "$PIN" in sha256//?*) ;; *) die "--pin sha256//KEY is required (\`cloudless token create --join-command\` prints it)" ;; esac
case "$RUNTIME" in ""|process|podman|auto) ;; *) die "--runtime must be process or podman, got $RUNTIME" ;; esac
[ -z "$RUNTIME" ] && { [ "$CONTAINERS" = 1 ] && RUNTIME=podman || RUNTIME=process; }
[ -z "$TOKEN" ] && [ -n "$TOKEN_FILE" ] && TOKEN="$(cat "$TOKEN_FILE")"
if [ -z "$NODE_ID" ]; then  # Termux has neither /etc/hostname nor `hostname`, and Android calls itself localhost
  NODE_ID="$(cat /etc/hostname 2>/dev/null || hostname 2>/dev/null || uname -n 2>/dev/null || true)"
  case "$NODE_ID" in
    ""|localhost|localhost.*) die "this device has no name of its own (${NODE_ID:-none}): pass --node-id NAME" \
      "(\`cloudless token create --join-command --node-id NAME\` prints a line with it)" ;;
  esac
fi
# the id goes into file names, a unit and a supervisor script: only what a node id may hold (the wire's id syntax)
case "$NODE_ID" in
  [A-Za-z0-9]*) ;;
  *) die "node id '$NODE_ID' must start with a letter or digit: pass --node-id NAME" ;;
esac
case "$NODE_ID" in
  *[!A-Za-z0-9._-]*) die "node id '$NODE_ID' may hold only letters, digits, '.', '_' and '-': pass --node-id NAME" ;;
esac
[ "${#NODE_ID}" -le 63 ] || die "node id '$NODE_ID' is longer than 63 characters: pass --node-id NAME"
ARCH="$(uname -m)"
case "$ARCH" in aarch64|armv7l|x86_64) ;; armv8l) ARCH=armv7l ;; *) die "unsupported machine $ARCH (aarch64, armv7l, x86_64)" ;; esac
say "$OS on $ARCH; coordinator $SERVER; node $NODE_ID"

fetch() {  # fetch URL-PATH FILE: from the coordinator, the API key pinned (-k: the pin, not a CA, authenticates it)
  curl -fsSk --retry 3 --pinnedpubkey "$PIN" -o "$2" "$SERVER$1"
}

# ---- packages: only what this device lacks ---------------------------------------------------------------------
missing_debs() {
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || printf '%s ' "$p"
  done
}

SYSTEM_SITE=""
BINARY="--only-binary=:all:"  # nothing is compiled on the device
if [ "$OS" = termux ]; then
  pkg install -y python python-cryptography python-psutil >/dev/null
  SYSTEM_SITE="--system-site-packages"  # Termux's cryptography and psutil (no Android wheels on the index)
  export MSGPACK_PUREPYTHON=1          # msgpack's pure-Python fallback: no compiler needed
  # Android's Python is no manylinux platform: msgpack (and paho-mqtt's kind) come as source; with
  # MSGPACK_PUREPYTHON msgpack builds without a compiler
  BINARY="--prefer-binary"
else
  NEED="python3 python3-venv"
  if [ "$ARCH" = armv7l ]; then
    NEED="$NEED python3-psutil python3-msgpack python3-cffi"  # no armv7l wheels for these on the index
    SYSTEM_SITE="--system-site-packages"
  fi
  [ "$CONTAINERS" = 1 ] && NEED="$NEED podman uidmap slirp4netns fuse-overlayfs"
  MISSING="$(missing_debs $NEED)"
  if [ -n "$MISSING" ]; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then command -v sudo >/dev/null || die "need root to apt-get install $MISSING"; SUDO=sudo; fi
    say "apt-get install $MISSING"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $MISSING >/dev/null \
      || die "apt-get install $MISSING failed"
  fi
fi

# ---- the venv and the wheels -----------------------------------------------------------------------------------
mkdir -p "$BASE/wheels" "$DATA" "$RUN" "$BASE/bin"
chmod 700 "$BASE" "$DATA"
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV ${SYSTEM_SITE:+($SYSTEM_SITE)}"
  python3 -m venv $SYSTEM_SITE "$VENV" || die "python3 -m venv failed (python3-venv missing?)"
fi

fetch /v1/install/wheels "$BASE/wheels/SHA256SUMS" || die "cannot fetch the wheel list from $SERVER (pin or network)"
# the project's wheel, and whichever dependency wheels the coordinator carries for this machine
while read -r sum name; do
  case "$name" in
    cloudless-*|*-none-any.whl|*_"$ARCH".whl|*_"$ARCH".*.whl) ;;
    *) continue ;;
  esac
  case "$name" in */*|.*) die "bad wheel name in the list: $name" ;; esac
  if [ ! -f "$BASE/wheels/$name" ] || [ "$(sha256sum "$BASE/wheels/$name" | cut -d' ' -f1)" != "$sum" ]; then
    fetch "/v1/install/wheels/$name" "$BASE/wheels/$name.part" || die "download of $name failed"
    [ "$(sha256sum "$BASE/wheels/$name.part" | cut -d' ' -f1)" = "$sum" ] || die "$name: sha256 mismatch"
    mv "$BASE/wheels/$name.part" "$BASE/wheels/$name"
  fi
done < "$BASE/wheels/SHA256SUMS"
WHEEL="$(grep -o 'cloudless-[^ ]*\.whl' "$BASE/wheels/SHA256SUMS" | head -n1)"
[ -n "$WHEEL" ] || die "the coordinator serves no agent wheel (see its log)"
WHEEL_SUM="$(grep " $WHEEL\$" "$BASE/wheels/SHA256SUMS" | cut -d' ' -f1)"

CONSTRAINTS="$BASE/wheels/constraints.txt"
: > "$CONSTRAINTS"
# cryptography >= 46.0.1 needs cffi >= 2, which has no armv7l wheel; Debian bookworm's python3-cffi is 1.15
[ "$ARCH" = armv7l ] && echo "cryptography<46.0.1" >> "$CONSTRAINTS"

pip_install() {  # the coordinator's wheels first (works offline), then the package index for what they lack
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check $BINARY -c "$CONSTRAINTS" \
      --no-index --find-links "$BASE/wheels" "$@" 2>/dev/null \
  || "$VENV/bin/python" -m pip install -q --disable-pip-version-check $BINARY -c "$CONSTRAINTS" \
      --retries 2 --find-links "$BASE/wheels" "$@"
}

if [ "$(cat "$BASE/installed" 2>/dev/null)" != "$WHEEL_SUM" ]; then
  say "installing $WHEEL"
  FORCE=""
  [ -f "$BASE/installed" ] && FORCE="--force-reinstall --no-deps"  # same version, new build: replace our code only
  pip_install $FORCE "$BASE/wheels/$WHEEL" || die "pip could not install $WHEEL and its dependencies"
  if [ "$OVERLAY" = 1 ]; then
    if pip_install "$BASE/wheels/$WHEEL[overlay]" >/dev/null 2>&1; then
      say "overlay: aioquic installed (QUIC data plane on)"
    else
      say "overlay: no aioquic wheel for $ARCH; the agent runs without the overlay (workloads still run)."
      say "  to build it here: sudo apt install build-essential libssl-dev python3-dev && $VENV/bin/pip install aioquic"
    fi
  fi
  echo "$WHEEL_SUM" > "$BASE/installed"
else
  say "$WHEEL already installed"
fi

# ---- enrolment (once; the identity in $DATA is kept across reinstalls) -----------------------------------------
# the agent enrols on its first start (and re-enrols with the token only when its certificate expired)
ENROLLED=0
[ -s "$DATA/identity/node.pem" ] && ENROLLED=1
if [ -n "$TOKEN" ] && [ "$ENROLLED" = 0 ]; then (umask 077; printf '%s\n' "$TOKEN" > "$DATA/token"); fi
[ "$ENROLLED" = 1 ] || [ -s "$DATA/token" ] \
  || die "this device is not enrolled: pass --token (from \`cloudless token create\`)"
[ "$ENROLLED" = 1 ] && [ -n "$TOKEN" ] && say "already enrolled as $(cat "$DATA/identity/enrolment.json" | \
  sed -n 's/.*"node_id": *"\([^"]*\)".*/\1/p'); the token is not used"

AGENT_ARGS="agent --node-id $NODE_ID --data-dir $DATA --runtime $RUNTIME"
[ -s "$DATA/token" ] && AGENT_ARGS="$AGENT_ARGS --token-file $DATA/token"
[ "$OVERLAY" = 0 ] && AGENT_ARGS="$AGENT_ARGS --no-overlay"

# ---- the service -----------------------------------------------------------------------------------------------
cat > "$SUPERVISOR.new" <<EOF
#!$SH
# cloudless agent supervisor (written by install-agent.sh): restarts the agent 2 s after it exits.
echo \$\$ > "$RUN/supervisor.pid"
child=""
trap 'if [ -n "\$child" ]; then kill "\$child" 2>/dev/null; wait "\$child"; fi; rm -f "$RUN/agent.pid" "$RUN/supervisor.pid"; exit 0' TERM INT
while :; do
  ${MSGPACK_PUREPYTHON:+MSGPACK_PUREPYTHON=1 }"$VENV/bin/cloudless" $AGENT_ARGS >> "$BASE/agent.log" 2>&1 &
  child=\$!
  echo "\$child" > "$RUN/agent.pid"
  wait "\$child" || true
  sleep 2
done
EOF
chmod 755 "$SUPERVISOR.new"
CHANGED=0
cmp -s "$SUPERVISOR.new" "$SUPERVISOR" 2>/dev/null || CHANGED=1
mv "$SUPERVISOR.new" "$SUPERVISOR"

if [ "$OS" = termux ]; then
  mkdir -p "$(dirname "$BOOT")"
  # Termux:Boot runs every executable in ~/.termux/boot/ after the phone starts (its documented form)
  printf '#!%s\ntermux-wake-lock\nexec %s\n' "$SH" "$SUPERVISOR" > "$BOOT"
  chmod 755 "$BOOT"
  command -v termux-wake-lock >/dev/null && termux-wake-lock || true
  [ "$CHANGED" = 1 ] && stop_service
  start_supervised
  say "started (Termux:Boot script $BOOT starts it after a reboot; install the Termux:Boot app once)"
elif has_systemd; then
  mkdir -p "$UNIT_DIR"
  cat > "$UNIT.new" <<EOF
[Unit]
Description=Cloudless edge agent ($NODE_ID)
After=network-online.target

[Service]
ExecStart=$VENV/bin/cloudless $AGENT_ARGS
Restart=always
RestartSec=2
LimitNOFILE=65536

[Install]
WantedBy=default.target
EOF
  cmp -s "$UNIT.new" "$UNIT" 2>/dev/null || CHANGED=1
  mv "$UNIT.new" "$UNIT"
  user_bus
  loginctl enable-linger "$(id -un)" 2>/dev/null || say "warning: loginctl enable-linger failed: the agent stops at logout"
  i=0  # linger starts the user's manager when no session did: its bus appears shortly after
  while [ ! -e "$XDG_RUNTIME_DIR/bus" ] && [ $i -lt 40 ]; do sleep 0.25; i=$((i + 1)); done
  systemctl --user daemon-reload
  if [ "$CHANGED" = 1 ]; then systemctl --user enable cloudless-agent.service >/dev/null 2>&1
    systemctl --user restart cloudless-agent.service
  else systemctl --user enable --now cloudless-agent.service >/dev/null 2>&1; fi
  say "started: systemctl --user status cloudless-agent (journalctl --user -u cloudless-agent)"
else
  say "no systemd here (a container or chroot?): running the agent under a supervisor process instead"
  [ "$CHANGED" = 1 ] && stop_service
  start_supervised
  say "started: pid $(cat "$RUN/agent.pid") (supervisor $(cat "$RUN/supervisor.pid")); log $BASE/agent.log"
  say "it does not start at boot by itself: run this script with --restart from your init system"
fi
