#!/usr/bin/env bash
# tests/soak/soak.sh - the soak test (issue 7): a mixed load at ~70 % of the server's capacity
# for SOAK_SECONDS, then checks that
#   - no request failed: every answer 2xx (no 5xx, no 4xx), no socket error or timeout in wrk;
#   - RSS stayed flat. At rest (no request in flight), read before the soak (after the
#     capacity run) and after it: fails when it grew by more than the margin, the larger of
#     SOAK_RSS_MARGIN_PCT % (default 10) and SOAK_RSS_MARGIN_KB (default 8192). Under load,
#     VmRSS sampled every SOAK_SAMPLE_SECONDS: "start" is the first sample after the warm-up
#     (SOAK_WARMUP_SECONDS, default a fifth of the run, at most 60 s), "end" the last one;
#     fails when end - start exceeds the margin plus the argon2 memory of every hash worker
#     (a sample may catch them all hashing, or none);
#   - no descriptor leaked: once the load is over and every request answered, the server holds
#     no connection on its HTTP port (ss), and /proc/PID/fd, counted with no client connected
#     before the soak (after the capacity run) and after it, grew by at most SOAK_FD_SLACK
#     (default 4: the database connection pools open connections lazily, up to one per thread
#     that uses them at once, two descriptors each for a SQLite file and its WAL); what each
#     descriptor is, before and after, is printed when they differ; the samples under load
#     are reported too.
# The mix (tests/soak/mix.lua): out of 100 requests, SOAK_LOGIN_PCT (2) password logins,
# SOAK_REFRESH_PCT (8) refreshes, the rest GET /user token checks. Capacity is the rate of
# successful answers wrk gets from that mix, unpaced, with SOAK_CONNS (128) connections, over
# the second half of SOAK_CAPACITY_SECONDS (30; 10 when SOAK_SECONDS < 60): the first half is
# faster than the steady state, as every connection serves token checks until it first waits
# behind a queued login. The soak then paces the same mix at SOAK_LOAD_PCT (70) % of it.
#
# Backend: SQLite (a file in a temporary directory) by default; SOAK_BACKEND=postgres uses a
# fresh database in the cluster named by TESSERA_TEST_PG_HOST / TESSERA_TEST_PG_PORT (as
# scripts/pg.sh prints them). The server is TESSERA_BIN (default build/tessera) with its
# default settings (argon2id 19 MiB, 2 passes), except MAILER_AUTOCONFIRM and a hash queue as
# long as the connections (PASSWORD_HASH_QUEUE; 64 by default), so that the unpaced capacity run
# measures the hashing rather than the shedding of hash jobs (429); other TESSERA_* variables in
# the environment reach it.
#
# Prints the figures and a last line "soak: PASS ..." or "soak: FAIL ..."; exits 0 on pass,
# 1 on a failed check, 2 when the run itself could not be made. SOAK_OUT=DIR keeps the server
# log, wrk outputs and samples there (default: a temporary directory, removed).
# Short version for make test: SOAK_SECONDS=20.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/tests/soak
TESSERA=${TESSERA_BIN:-$ROOT/build/tessera}
SECONDS_RUN=${SOAK_SECONDS:-600}
CONNS=${SOAK_CONNS:-128}
THREADS=${SOAK_THREADS:-2}
LOAD_PCT=${SOAK_LOAD_PCT:-70}
SAMPLE=${SOAK_SAMPLE_SECONDS:-5}
BACKEND=${SOAK_BACKEND:-sqlite}
if ((SECONDS_RUN < 60)); then CAP_SECONDS=${SOAK_CAPACITY_SECONDS:-10}; else CAP_SECONDS=${SOAK_CAPACITY_SECONDS:-30}; fi
CAP_WARMUP=$((CAP_SECONDS / 2))
WARMUP=${SOAK_WARMUP_SECONDS:-$((SECONDS_RUN / 5 < 60 ? SECONDS_RUN / 5 : 60))}
RSS_PCT=${SOAK_RSS_MARGIN_PCT:-10}
RSS_KB=${SOAK_RSS_MARGIN_KB:-8192}
FD_SLACK=${SOAK_FD_SLACK:-4}
export SOAK_LOGIN_PCT=${SOAK_LOGIN_PCT:-2} SOAK_REFRESH_PCT=${SOAK_REFRESH_PCT:-8}
export SOAK_THREADS=$THREADS

say() { printf 'soak: %s\n' "$*"; }
die() { say "ERROR: $*"; exit 2; }

for v in SECONDS_RUN CONNS THREADS LOAD_PCT SAMPLE CAP_SECONDS RSS_PCT RSS_KB; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done
for t in wrk node curl awk; do command -v "$t" >/dev/null || die "$t is not installed"; done
[[ -x $TESSERA ]] || die "$TESSERA not found (make build, or set TESSERA_BIN)"
((CONNS % THREADS == 0)) || die "SOAK_CONNS must be a multiple of SOAK_THREADS"
# wrk and the server each hold a descriptor per connection.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
(($(ulimit -n) > CONNS + 200)) || die "ulimit -n $(ulimit -n) is too low for $CONNS connections"

TMP=$(mktemp -d /tmp/tessera-soak.XXXXXX) || die "mktemp failed"
OUT=${SOAK_OUT:-$TMP/out}
mkdir -p "$OUT" "$TMP/fx"
SERVER_PID=""
SAMPLER_PID=""
PGDB=""
cleanup() {
    [[ -n $SAMPLER_PID ]] && kill "$SAMPLER_PID" 2>/dev/null
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID"
        for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER_PID" 2>/dev/null
    fi
    wait 2>/dev/null
    [[ -n $PGDB ]] && dropdb -h "$TESSERA_TEST_PG_HOST" -p "$TESSERA_TEST_PG_PORT" -U postgres \
        --force --if-exists "$PGDB" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 2' INT TERM

# ---- the server ----

case $BACKEND in
sqlite) DB_URL="sqlite://$TMP/soak.db" ;;
postgres)
    [[ -n ${TESSERA_TEST_PG_HOST:-} ]] || die "SOAK_BACKEND=postgres needs TESSERA_TEST_PG_HOST/PORT (scripts/pg.sh)"
    TESSERA_TEST_PG_PORT=${TESSERA_TEST_PG_PORT:-5432}
    PGDB=tessera_soak_$$_$RANDOM
    createdb -h "$TESSERA_TEST_PG_HOST" -p "$TESSERA_TEST_PG_PORT" -U postgres "$PGDB" || die "createdb failed"
    DB_URL="postgresql:///$PGDB?host=$TESSERA_TEST_PG_HOST&port=$TESSERA_TEST_PG_PORT&user=postgres"
    ;;
*) die "SOAK_BACKEND must be sqlite or postgres" ;;
esac

free_port() { # asks the kernel for a free loopback port (node is at hand)
    node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}
PORT=$(free_port) || die "no free port"
BASE=http://127.0.0.1:$PORT
# The test harnesses' own TESSERA_ variables are not settings: the server refuses unknown ones.
SENV=()
for v in $(compgen -e); do
    [[ $v == TESSERA_BIN || $v == TESSERA_TEST_* ]] && SENV+=(-u "$v")
done
SENV+=(TESSERA_DATABASE_URL="$DB_URL" TESSERA_LISTEN="127.0.0.1:$PORT" TESSERA_MAILER_AUTOCONFIRM=true
    TESSERA_PASSWORD_HASH_QUEUE="${TESSERA_PASSWORD_HASH_QUEUE:-$CONNS}")
env "${SENV[@]}" "$TESSERA" migrate >"$OUT/migrate.log" 2>&1 || { cat "$OUT/migrate.log"; die "migrate failed"; }
env "${SENV[@]}" "$TESSERA" serve >"$OUT/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 200); do
    curl -sf -o /dev/null --max-time 1 "$BASE/health" && break
    kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 20 "$OUT/server.log"; die "the server exited at start"; }
    sleep 0.1
done
curl -sf -o /dev/null --max-time 2 "$BASE/health" || die "the server did not answer /health"

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$SERVER_PID/status" 2>/dev/null; }
fd_count() { find "/proc/$SERVER_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
metric() { curl -s --max-time 5 "$BASE/metrics" | awk -v n="$1" '$1 == n {print $2; exit}'; }
# Waits (up to 120 s) until no request is in flight and the hash pool is idle: wrk stops with
# logins still queued, whose connections stay open until they are answered.
drain() {
    local i
    for ((i = 0; i < 240; i++)); do
        [[ $(metric tessera_http_in_flight) == 1 && $(metric tessera_hashpool_queue_depth) == 0 &&
            $(metric tessera_hashpool_running) == 0 ]] && return 0
        sleep 0.5
    done
    say "warning: requests still in flight 120 s after the load"
}
# Descriptors with no client connected: waits for requests in flight, then (up to 10 s) for the
# count to settle, as the server closes connections the clients have closed.
idle_fds() {
    drain
    local prev=-1 n i
    for ((i = 0; i < 20; i++)); do
        n=$(fd_count)
        [[ $n == "$prev" ]] && break
        prev=$n
        sleep 0.5
    done
    echo "$n"
}
# What each descriptor is (a socket, the database file, its WAL...), for the report.
fd_targets() {
    local f
    for f in /proc/"$SERVER_PID"/fd/*; do readlink "$f"; done 2>/dev/null |
        sed -E 's/\[[0-9]+\]$//' | sort | uniq -c
}
# The server's connections on its HTTP port other than the listening socket (a connection the
# client has closed but the server has not would stay here, in CLOSE-WAIT).
client_conns() {
    ss -Htanp "( sport = :$PORT )" 2>/dev/null | grep -v LISTEN | grep -c "pid=$SERVER_PID," || true
}

# ---- fixtures: users and sessions (one refresh-token set per wrk run) ----

NUSERS=${SOAK_USERS:-$CONNS}
node "$HERE/fixtures.mjs" "$BASE" "$TMP/fx" "$NUSERS" "$CONNS" 2 >"$OUT/fixtures.log" 2>&1 ||
    { cat "$OUT/fixtures.log"; die "fixtures failed"; }
export SOAK_USERS=$TMP/fx/users.txt SOAK_ACCESS=$TMP/fx/access.txt
FD_START=$(idle_fds)
RSS_IDLE=$(rss_kb)

# soak_line FILE KEY: a value from the SOAK line mix.lua's done() printed.
soak_val() { grep -oE "(^| )$2=[0-9.]+" "$1" | head -n 1 | cut -d= -f2; }

run_wrk() { # NAME SECONDS REFRESH_SET COUNT_AFTER [SOAK_RATE]
    local name=$1 secs=$2 set=$3 after=$4 rate=${5:-}
    SOAK_REFRESH=$TMP/fx/refresh$set.txt SOAK_RATE=$rate SOAK_COUNT_AFTER=$after \
        timeout -s INT -k 10 $((secs + 60)) wrk -t"$THREADS" -c"$CONNS" -d"${secs}s" --timeout 10s \
        -s "$HERE/mix.lua" "$BASE" >"$OUT/wrk-$name.txt" 2>&1
    local rc=$?
    grep -q '^SOAK ' "$OUT/wrk-$name.txt" || { cat "$OUT/wrk-$name.txt"; die "wrk ($name) printed no summary (status $rc)"; }
}

# ---- capacity ----

say "server pid $SERVER_PID on $BACKEND, $CONNS connections, mix ${SOAK_LOGIN_PCT}% login /" \
    "${SOAK_REFRESH_PCT}% refresh / rest GET /user; capacity run ${CAP_SECONDS}s"
run_wrk capacity "$CAP_SECONDS" 1 "$CAP_WARMUP"
C=$OUT/wrk-capacity.txt
# Answers that succeeded per second in the steady half: a request shed (429) or failed is no
# capacity.
CAP_RPS=$(awk -v n="$(soak_val "$C" steady_ok)" -v s="$(soak_val "$C" seconds)" -v w="$CAP_WARMUP" \
    'BEGIN {printf "%.0f", n / (s - w)}')
((CAP_RPS > 0)) || die "capacity run answered nothing"
RATE=$((CAP_RPS * LOAD_PCT / 100))
((RATE > 0)) || RATE=1
say "capacity: $CAP_RPS req/s over the last $((CAP_SECONDS - CAP_WARMUP)) s (ok $(soak_val "$C" ok), 4xx $(soak_val "$C" status_4xx)," \
    "5xx $(soak_val "$C" status_5xx), p99 $(soak_val "$C" p99_ms) ms); soak at $RATE req/s for ${SECONDS_RUN}s"

# Descriptors with no client, now that the capacity run has grown whatever pools grow with load
# (the PostgreSQL connections): the baseline the soak must end at.
FD_BEFORE=$(idle_fds)
RSS_REST=$(rss_kb)
fd_targets >"$OUT/fds-before.txt"

# ---- the soak, sampled ----

SAMPLES=$OUT/samples.tsv
printf 't_s\trss_kb\tfds\n' >"$SAMPLES"
(
    t0=$(date +%s)
    while kill -0 "$SERVER_PID" 2>/dev/null; do
        printf '%s\t%s\t%s\n' $(($(date +%s) - t0)) "$(rss_kb)" "$(fd_count)" >>"$SAMPLES"
        sleep "$SAMPLE"
    done
) &
SAMPLER_PID=$!
run_wrk soak "$SECONDS_RUN" 2 0 "$RATE"
kill "$SAMPLER_PID" 2>/dev/null
wait "$SAMPLER_PID" 2>/dev/null
SAMPLER_PID=""
kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 30 "$OUT/server.log"; die "the server died during the soak"; }
FD_AFTER=$(idle_fds)
RSS_AFTER_IDLE=$(rss_kb)
fd_targets >"$OUT/fds-after.txt"
CONNS_AFTER=$(client_conns)

# ---- checks ----

S=$OUT/wrk-soak.txt
fails=()
for k in status_4xx status_5xx status_other err_connect err_read err_write err_timeout refresh_starved; do
    v=$(soak_val "$S" $k)
    [[ ${v:-x} == 0 ]] || fails+=("$k=$v")
done
DONE=$(soak_val "$S" requests)
ACHIEVED=$(awk -v n="$DONE" -v s="$(soak_val "$S" seconds)" 'BEGIN {printf "%.0f", n / s}')
read -r RSS_START RSS_END RSS_MAX FD_MIN FD_MAX NSAMP < <(awk -v w="$WARMUP" -F'\t' '
    NR > 1 && $2 != "" {
        if ($1 >= w && start == "") start = $2
        if (start != "") end = $2
        if ($2 > max) max = $2
        if (fmin == "" || $3 < fmin) fmin = $3
        if ($3 > fmax) fmax = $3
        n++
    }
    END { print start, end, max, fmin, fmax, n }' "$SAMPLES")
[[ -n $RSS_START && -n $RSS_END ]] || die "too few RSS samples after the warm-up"
margin() { # the allowed growth over a base RSS
    local m=$(($1 * RSS_PCT / 100))
    ((m < RSS_KB)) && m=$RSS_KB
    echo "$m"
}
# At rest: nothing in flight, so the two readings differ only by what the soak left behind.
IDLE_MARGIN=$(margin "$RSS_REST")
((RSS_AFTER_IDLE - RSS_REST > IDLE_MARGIN)) &&
    fails+=("RSS at rest grew $((RSS_AFTER_IDLE - RSS_REST)) kB > margin $IDLE_MARGIN kB")
# Under load, a sample may catch every hash worker holding its argon2 memory or none of them:
# that much is allowed on top of the margin.
HASH_KB=$((${TESSERA_PASSWORD_HASH_WORKERS:-$(nproc)} * ${TESSERA_PASSWORD_HASH_MEMORY_KIB:-19456}))
LOAD_MARGIN=$(($(margin "$RSS_START") + HASH_KB))
((RSS_END - RSS_START > LOAD_MARGIN)) &&
    fails+=("RSS under load grew $((RSS_END - RSS_START)) kB > margin $LOAD_MARGIN kB")
((CONNS_AFTER > 0)) && fails+=("$CONNS_AFTER client connections left open after the load")
((FD_AFTER - FD_BEFORE > FD_SLACK)) && fails+=("fds idle before $FD_BEFORE, after $FD_AFTER")

say "load: $DONE requests in $(soak_val "$S" seconds) s = $ACHIEVED req/s" \
    "($(awk -v a="$ACHIEVED" -v c="$CAP_RPS" 'BEGIN {printf "%.0f", 100 * a / c}') % of capacity):" \
    "GET /user $(soak_val "$S" get_user), refresh $(soak_val "$S" refresh), login $(soak_val "$S" login)"
say "answers: 2xx $(soak_val "$S" ok), 4xx $(soak_val "$S" status_4xx), 5xx $(soak_val "$S" status_5xx);" \
    "socket errors: connect $(soak_val "$S" err_connect), read $(soak_val "$S" err_read)," \
    "write $(soak_val "$S" err_write), timeout $(soak_val "$S" err_timeout);" \
    "latency p50 $(soak_val "$S" p50_ms) ms, p99 $(soak_val "$S" p99_ms) ms, max $(soak_val "$S" max_ms) ms"
say "RSS (kB): at rest after fixtures $RSS_IDLE, before the soak $RSS_REST, after it $RSS_AFTER_IDLE" \
    "(margin $IDLE_MARGIN); under load after ${WARMUP}s warm-up $RSS_START, end $RSS_END, max $RSS_MAX" \
    "(margin $LOAD_MARGIN, hash memory included); $NSAMP samples every ${SAMPLE}s"
say "fds: idle at start $FD_START, before the soak $FD_BEFORE, after it $FD_AFTER (slack $FD_SLACK);" \
    "under load min $FD_MIN, max $FD_MAX; client connections left after the load: $CONNS_AFTER"
if ! cmp -s "$OUT/fds-before.txt" "$OUT/fds-after.txt"; then
    say "descriptors by target, before the soak (<) and after it (>):"
    diff "$OUT/fds-before.txt" "$OUT/fds-after.txt" | grep '^[<>]' | sed 's/^/soak:   /'
fi
if [[ -n ${SOAK_OUT:-} ]]; then say "outputs in $OUT"; fi
if ((${#fails[@]})); then
    tail -n 20 "$OUT/server.log"
    say "FAIL: ${fails[*]}"
    exit 1
fi
say "PASS ($BACKEND, ${SECONDS_RUN}s at $ACHIEVED req/s)"
