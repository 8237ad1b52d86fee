#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests: nothing depends on a server being there.
#
#   scripts/pg.sh start DIR   initdb in DIR (created), start on a Unix socket in DIR only
#                             (no TCP), print the variables the tests read:
#                               TESSERA_TEST_PG_HOST=DIR TESSERA_TEST_PG_PORT=N
#   scripts/pg.sh stop DIR    stop it and remove DIR
#   scripts/pg.sh down DIR    stop it, keeping its data (for tests of a database outage)
#   scripts/pg.sh up DIR      start it again after down
#
# Runs the server as the postgres user (initdb refuses root); durability is traded for speed
# (fsync off): these clusters live for one test run.
set -euo pipefail
cmd=${1:?usage: pg.sh start|stop|down|up DIR}
dir=${2:?usage: pg.sh start|stop|down|up DIR}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$bin/pg_ctl" ] || { echo "pg.sh: PostgreSQL server binaries not found (scripts/deps.sh installs them)" >&2; exit 1; }
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
port=${PGTEST_PORT:-$((40000 + RANDOM % 20000))}
case "$cmd" in
start)
    mkdir -p "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres "$dir"
    as_pg "$bin/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 ||
        { cat "$dir/initdb.log" >&2; exit 1; }
    echo "-k $dir -c listen_addresses='' -p $port -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" >"$dir/opts"
    as_pg "$bin/pg_ctl" -D "$dir/data" -w -t 30 -l "$dir/server.log" -o "$(cat "$dir/opts")" \
        start >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
    echo "TESSERA_TEST_PG_HOST=$dir"
    echo "TESSERA_TEST_PG_PORT=$port"
    ;;
stop)
    if [ -d "$dir/data" ]; then
        as_pg "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    ;;
down)
    as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    ;;
up)
    as_pg "$bin/pg_ctl" -D "$dir/data" -w -t 30 -l "$dir/server.log" -o "$(cat "$dir/opts")" \
        start >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
    ;;
*)
    echo "usage: pg.sh start|stop|down|up DIR" >&2
    exit 2
    ;;
esac
