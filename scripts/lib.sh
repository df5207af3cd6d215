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

# start_postgres DIR [EXTRA_SETTINGS...] initialises a throwaway PostgreSQL 15 cluster in DIR
# (Debian's postgresql package, installed when missing), listening on 127.0.0.1 on a port the
# OS picks and on a socket in DIR, with trust authentication for the superuser `heddle`, and
# starts it. It sets HEDDLE_PG_PORT, HEDDLE_PG_DIR and HEDDLE_PG_URL (the `postgres` database).
# As root, the server runs as the `postgres` user (PostgreSQL refuses to run as root).
# stop_postgres stops it (by the pid in DIR/postmaster.pid) and removes DIR.
pg_bin() { echo /usr/lib/postgresql/15/bin; }
start_postgres() {
  local dir=$1; shift
  [ -x "$(pg_bin)/initdb" ] || install_packages postgresql-15
  mkdir -p "$dir"
  local as=()
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres "$dir"
    as=(runuser -u postgres --)
  fi
  "${as[@]}" "$(pg_bin)/initdb" -D "$dir/data" -U heddle --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; return 1; }
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  local options="-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir -c max_connections=300"
  for setting in "$@"; do options="$options -c $setting"; done
  "${as[@]}" "$(pg_bin)/pg_ctl" -D "$dir/data" -o "$options" -l "$dir/server.log" -w -t 60 start >/dev/null \
    || { cat "$dir/server.log" >&2; return 1; }
  export HEDDLE_PG_DIR=$dir HEDDLE_PG_PORT=$port
  export HEDDLE_PG_URL="postgres://heddle@127.0.0.1:$port/postgres"
}
stop_postgres() {
  local dir=${1:-${HEDDLE_PG_DIR:-}}
  [ -n "$dir" ] && [ -d "$dir" ] || return 0
  if [ -f "$dir/data/postmaster.pid" ]; then
    local pid
    pid=$(head -1 "$dir/data/postmaster.pid")
    kill -INT "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -rf "$dir"
}
