# Sourced by the install scripts (bash): `install_missing LABEL PKG...` installs, with apt, the packages of the list
# that are not installed yet, and leaves them in the array `missing` (empty: nothing was installed). Needs root,
# or sudo when there is one; says what to run otherwise.
install_missing() {
  local label="$1"
  shift
  missing=()
  local pkg
  for pkg in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$pkg")
    fi
  done
  if [ ${#missing[@]} -eq 0 ]; then
    echo "$label: all present"
    return 0
  fi
  echo "$label: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
      echo "error: need root to install ${missing[*]}; run: sudo $0" >&2; exit 1
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  echo "$label: done"
}
