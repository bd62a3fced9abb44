# shellcheck shell=bash
# Sourced by scripts/test and friends: makes a PostgreSQL server available and exports
# DATABASE_URL (an admin URL; tests create their own databases on it) and RDEV_PG_BINDIR.
#
# Order: $DATABASE_URL if set and reachable; else a running local server (127.0.0.1:5432 or
# the default socket, users postgres or $USER); else a private cluster in target/pg on a
# random port, stopped again by rdev_pg_stop_private (call it from an EXIT trap).

rdev_pg_bindir() {
  if [ -n "${RDEV_PG_BINDIR:-}" ] && [ -x "$RDEV_PG_BINDIR/pg_ctl" ]; then echo "$RDEV_PG_BINDIR"; return 0; fi
  local d
  if command -v pg_config >/dev/null 2>&1; then
    d=$(pg_config --bindir 2>/dev/null || true)
    if [ -n "$d" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/initdb" ]; then echo "$d"; return 0; fi
  fi
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r) /usr/local/pgsql/bin; do
    if [ -x "$d/pg_ctl" ] && [ -x "$d/initdb" ]; then echo "$d"; return 0; fi
  done
  if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
    dirname "$(readlink -f "$(command -v pg_ctl)")"; return 0
  fi
  return 1
}

rdev_pg_reachable() {
  command -v psql >/dev/null 2>&1 || return 1
  PGCONNECT_TIMEOUT=3 psql "$1" -XAtqc 'select 1' >/dev/null 2>&1
}

# Runs a command as the unprivileged owner of the private cluster (initdb refuses root).
rdev_pg_as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u "$RDEV_PG_OWNER" -- "$@"
  else
    "$@"
  fi
}

rdev_pg_start_private() {
  local root="$1" bindir
  if ! bindir=$(rdev_pg_bindir); then
    echo "error: no PostgreSQL server binaries (initdb, pg_ctl) found and no server is reachable." >&2
    echo "       Install them (Debian: apt-get install postgresql) or set DATABASE_URL to a server." >&2
    return 1
  fi
  export RDEV_PG_BINDIR="$bindir"
  RDEV_PG_OWNER=$(id -un)
  if [ "$(id -u)" = 0 ]; then
    if id postgres >/dev/null 2>&1; then RDEV_PG_OWNER=postgres; else RDEV_PG_OWNER=nobody; fi
  fi
  export RDEV_PG_OWNER
  local dir="$root/target/pg"
  RDEV_PG_PRIVATE_DIR="$dir"
  mkdir -p "$dir"
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    rm -rf "$dir/data"
    mkdir -p "$dir/data"
    [ "$(id -u)" = 0 ] && chown -R "$RDEV_PG_OWNER" "$dir"
    rdev_pg_as_owner "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1 || {
      echo "error: initdb failed; see $dir/initdb.log" >&2; return 1; }
  fi
  [ "$(id -u)" = 0 ] && chown -R "$RDEV_PG_OWNER" "$dir"
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  rdev_pg_as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off" start >/dev/null || {
    echo "error: could not start the private PostgreSQL; see $dir/server.log" >&2; return 1; }
  RDEV_PG_STARTED=1
  export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
  echo "postgres: started a private server on port $port (data in $dir/data)" >&2
}

rdev_pg_stop_private() {
  if [ "${RDEV_PG_STARTED:-}" = 1 ]; then
    rdev_pg_as_owner "$RDEV_PG_BINDIR/pg_ctl" -D "$RDEV_PG_PRIVATE_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
    RDEV_PG_STARTED=0
    echo "postgres: stopped the private server" >&2
  fi
}

# ensure_postgres ROOT: sets DATABASE_URL (and RDEV_PG_BINDIR when binaries exist).
rdev_ensure_postgres() {
  local root="$1" bindir url
  if bindir=$(rdev_pg_bindir); then export RDEV_PG_BINDIR="$bindir"; fi
  if [ -n "${DATABASE_URL:-}" ]; then
    if rdev_pg_reachable "$DATABASE_URL"; then
      echo "postgres: using DATABASE_URL" >&2; return 0
    fi
    echo "postgres: DATABASE_URL is set but does not answer; looking for another server" >&2
  fi
  for url in "postgres://postgres@127.0.0.1:5432/postgres" \
             "postgresql:///postgres?user=postgres" \
             "postgres://${USER:-$(id -un)}@127.0.0.1:5432/postgres"; do
    if rdev_pg_reachable "$url"; then
      export DATABASE_URL="$url"
      echo "postgres: using the running local server ($url)" >&2
      return 0
    fi
  done
  rdev_pg_start_private "$root"
}
