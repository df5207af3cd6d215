# Shared helpers for scripts/*. Source it; it defines functions only.

# ensure_packages CMD:DEBIAN_PACKAGE ... installs the Debian packages whose command is missing.
ensure_packages() {
  local missing=()
  for pair in "$@"; do
    local cmd=${pair%%:*} pkg=${pair#*:}
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    install_packages "${missing[@]}"
  fi
}

# install_packages DEBIAN_PACKAGE ... installs them (apt-get update once per script run).
install_packages() {
  echo "installing $*" >&2
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  if [ -z "${HEDDLE_APT_UPDATED:-}" ]; then
    $sudo apt-get update -qq
    export HEDDLE_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

# ensure_swift fails with a clear message when the Swift toolchain is not on PATH.
ensure_swift() {
  if ! command -v swift >/dev/null 2>&1; then
    if [ -x /opt/swift/usr/bin/swift ]; then
      export PATH=/opt/swift/usr/bin:$PATH
    else
      echo "error: Swift 6 is needed (swift not on PATH and not in /opt/swift)" >&2
      exit 1
    fi
  fi
}
