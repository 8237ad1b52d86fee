#!/usr/bin/env bash
# bench/run.sh - Tessera's benchmark harness (`make bench`).
#
# Measures, in one run so that the ratios between figures hold:
#   (d) nginx answering a fixed 200 "ok": the ceiling of this machine + wrk
#   (a) GET /user: one token (cache hit) at several connection counts, poll and epoll;
#       a pool of 1000 distinct tokens, warm (all cached) and cold (each token presented
#       once to a freshly started server); once more with TESSERA_LOG_REQUESTS=true
#   (b) POST /token?grant_type=password against the raw argon2id rate of this machine,
#       and GET /user's latency while logins saturate the hash pool
#   (c) POST /token?grant_type=refresh_token, every request with a never-used token
# plus start-up time and idle RSS of every server started. Writes bench/RESULTS.md
# (overwritten; its "Durability" section is carried over) and keeps every raw wrk
# output, server log and the results table under bench/out/ (git-ignored).
#
# Everything runs on 127.0.0.1, from a temporary directory removed at exit; every
# process started is tracked by pid and stopped on exit, error or signal; every wait is
# bounded (BENCH_MAX_SECONDS overall).
#
# Environment (all optional):
#   BENCH_RUNS=3           runs per figure (the figure is the median)
#   BENCH_DURATION=10      seconds per run ("10" or "10s")
#   BENCH_QUICK=1          smoke test: 2 s x 1 run, 3,000 cold tokens
#   BENCH_THREADS=2        wrk -t
#   BENCH_POLL_CONNS="64 128 256 512 1000 4000"   (4000 dropped if ulimit -n is too low)
#   BENCH_EPOLL_CONNS="64 128 256 512 1000"
#   BENCH_POOL_TOKENS=1000 BENCH_COLD_TOKENS=20000 (HS256: 5000, minted by as many sign-ups)
#   BENCH_LOGIN_CONNS=32 BENCH_LOGIN_USERS=8 BENCH_REFRESH_CONNS=64
#   BENCH_JWT_SECRET=...   sign with HS256 (passed as TESSERA_JWT_SECRET); default ES256
#   BENCH_MAX_SECONDS      hard bound on the whole run (default: computed)
#   TESSERA_BIN            server binary (default build/tessera)
#   TESSERA_PASSWORD_HASH_WORKERS / _MEMORY_KIB / _ITERATIONS   (default nproc / 19456 / 2)
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
OUT=$BENCH/out
TESSERA=${TESSERA_BIN:-$ROOT/build/tessera}

# ---- settings ----

QUICK=${BENCH_QUICK:-0}
[[ $QUICK == 0 || $QUICK == false ]] && QUICK=0 || QUICK=1
if ((QUICK)); then
    RUNS=1
    DUR=2
    COLD_TOKENS=${BENCH_COLD_TOKENS:-3000}
else
    RUNS=${BENCH_RUNS:-3}
    DUR=${BENCH_DURATION:-10}
    DUR=${DUR%s}
    COLD_TOKENS=${BENCH_COLD_TOKENS:-20000}
fi
WRK_THREADS=${BENCH_THREADS:-2}
POLL_CONNS=${BENCH_POLL_CONNS:-64 128 256 512 1000 4000}
EPOLL_CONNS=${BENCH_EPOLL_CONNS:-64 128 256 512 1000}
POOL_TOKENS=${BENCH_POOL_TOKENS:-1000}
LOGIN_CONNS=${BENCH_LOGIN_CONNS:-32}
LOGIN_USERS=${BENCH_LOGIN_USERS:-8}
REFRESH_CONNS=${BENCH_REFRESH_CONNS:-64}
BASE_CONNS=64 # nginx ceiling, pools, LOG_REQUESTS comparison, /user beside logins
WRK_TIMEOUT=10s
JWT_SECRET=${BENCH_JWT_SECRET:-}
# HS256 signatures are deterministic: refreshes of one session within a second return the
# same access token, so under HS256 the cold tokens are those of as many sign-ups instead.
[[ -n $JWT_SECRET && -z ${BENCH_COLD_TOKENS:-} ]] && COLD_TOKENS=$((QUICK ? 1000 : 5000))
NPROC=$(nproc)
HASH_WORKERS=${TESSERA_PASSWORD_HASH_WORKERS:-$NPROC}
HASH_MEM_KIB=${TESSERA_PASSWORD_HASH_MEMORY_KIB:-19456}
HASH_ITER=${TESSERA_PASSWORD_HASH_ITERATIONS:-2}
WARMUP=1 # seconds of unrecorded load after each server start
export BENCH_THREADS=$WRK_THREADS # read by the wrk Lua scripts

for v in RUNS DUR WRK_THREADS POOL_TOKENS COLD_TOKENS LOGIN_CONNS LOGIN_USERS REFRESH_CONNS \
    HASH_WORKERS HASH_MEM_KIB HASH_ITER; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "bench: $v must be a positive integer (got '${!v}')" >&2; exit 2; }
done

# Rough upper bound of the whole run: every timed run plus generous slack.
NPOINTS=$((1 + $(wc -w <<<"$POLL_CONNS") + $(wc -w <<<"$EPOLL_CONNS") + 9))
MAX_SECONDS=${BENCH_MAX_SECONDS:-$((600 + NPOINTS * RUNS * (DUR + 20) + COLD_TOKENS / 50))}
START_TIME=$SECONDS

# The servers get exactly the settings below, nothing inherited.
for v in $(compgen -e); do
    [[ $v == TESSERA_* || $v == GOTRUE_* ]] && [[ $v != TESSERA_BIN ]] && unset "$v"
done

# ---- process tracking and cleanup ----

BG_PIDS=()
TMP=""

# Progress goes to the script's stderr as it was at start (fd 7), even from a trap that
# fires inside a function whose output is redirected to a wrk output file.
exec 7>&2
log() { printf '[bench %4ds] %s\n' $((SECONDS - START_TIME)) "$*" >&7; }
die() {
    log "ERROR: $*"
    exit 1
}

is_running() { # pid: alive and not a zombie
    local st
    st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    st=${st##*) }
    [[ ${st%% *} != Z ]]
}

track() { BG_PIDS+=("$@"); }
untrack() {
    local keep=() p q
    for p in "${BG_PIDS[@]}"; do
        for q in "$@"; do [[ $p == "$q" ]] && continue 2; done
        keep+=("$p")
    done
    BG_PIDS=("${keep[@]}")
}

stop_pids() { # pids...: TERM, up to 10 s, then KILL; reaps our children
    local p i alive
    (($#)) || return 0
    kill -TERM "$@" 2>/dev/null
    for ((i = 0; i < 200; i++)); do
        alive=0
        for p in "$@"; do is_running "$p" && alive=1; done
        ((alive)) || break
        sleep 0.05
    done
    for p in "$@"; do is_running "$p" && kill -KILL "$p" 2>/dev/null; done
    for p in "$@"; do wait "$p" 2>/dev/null; done
    untrack "$@"
    return 0
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if ((${#BG_PIDS[@]})); then
        log "stopping ${#BG_PIDS[@]} process(es) still running: ${BG_PIDS[*]}"
        stop_pids "${BG_PIDS[@]}"
    fi
    [[ -n $TMP && -d $TMP ]] && rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

check_budget() {
    ((SECONDS - START_TIME < MAX_SECONDS)) ||
        die "time budget of ${MAX_SECONDS}s (BENCH_MAX_SECONDS) exhausted; stopping"
}

# Runs a command in the background (so that signals reach us at once) and waits for it.
run_wait() {
    "$@" 7>&- &
    local p=$!
    track "$p"
    wait "$p"
    local rc=$?
    untrack "$p"
    return $rc
}

# ---- preflight ----

for t in wrk nginx node gcc curl ss timeout awk; do
    command -v "$t" >/dev/null || die "$t is not installed"
done
[[ -x $TESSERA ]] || die "$TESSERA not found: run 'make build' first"
[[ -f /usr/include/sodium.h ]] || die "libsodium headers missing (libsodium-dev)"

# File descriptors: the 4000-connection point needs ~4,100 in wrk and in the server.
HARD_NOFILE=$(ulimit -Hn)
[[ $HARD_NOFILE == unlimited ]] && HARD_NOFILE=1048576
ulimit -n "$HARD_NOFILE" 2>/dev/null || true
NOFILE=$(ulimit -n)
NOFILE_NOTE=""
kept=""
for c in $POLL_CONNS; do
    if ((c + 200 > NOFILE)); then
        NOFILE_NOTE+="poll at $c connections skipped: ulimit -n is $NOFILE. "
    else
        kept+="$c "
    fi
done
POLL_CONNS=${kept% }
kept=""
for c in $EPOLL_CONNS; do
    if ((c + 200 > NOFILE)); then
        NOFILE_NOTE+="epoll at $c connections skipped: ulimit -n is $NOFILE. "
    else
        kept+="$c "
    fi
done
EPOLL_CONNS=${kept% }

TMP=$(mktemp -d /tmp/tessera-bench.XXXXXX) || die "mktemp failed"
mkdir -p "$OUT" "$TMP/fx" "$TMP/nginx"
# Every server of this run is the same binary, even if build/ is rebuilt meanwhile.
cp "$TESSERA" "$TMP/tessera" || die "cannot copy $TESSERA"
TESSERA_SRC=$TESSERA
TESSERA=$TMP/tessera
"$TESSERA" version >/dev/null 2>&1 || die "$TESSERA_SRC does not run (being rebuilt?): try again"
rm -rf "${OUT:?}"/*
ROWS=$OUT/results.tsv
META=$OUT/meta.env
: >"$ROWS"
: >"$META"
meta() { printf '%s=%s\n' "$1" "$2" >>"$META"; }

port_free() { # nothing listening on the port (tessera sets SO_REUSEPORT: check first)
    [[ -z $(ss -Hltn "( sport = :$1 )" 2>/dev/null) ]] || return 1
    ! { exec 9<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || { exec 9<&- 9>&-; return 1; }
    return 0
}
pick_port() { # below the ephemeral range, so that no client socket can hold it
    local p i lo
    lo=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null)
    lo=${lo:-32768}
    for ((i = 0; i < 200; i++)); do
        p=$((lo - 12000 + RANDOM % 11000))
        port_free "$p" && { echo "$p"; return 0; }
    done
    die "no free loopback port found"
}
PORT=$(pick_port)
NGINX_PORT=$(pick_port)
[[ $NGINX_PORT == "$PORT" ]] && NGINX_PORT=$(pick_port)
BASE=http://127.0.0.1:$PORT
DB=$TMP/bench.db
CLK_TCK=$(getconf CLK_TCK)

log "tessera on 127.0.0.1:$PORT, nginx on 127.0.0.1:$NGINX_PORT, ${RUNS} run(s) x ${DUR}s," \
    "wrk -t$WRK_THREADS, budget ${MAX_SECONDS}s$( ((QUICK)) && echo ', QUICK MODE')"

# ---- /proc readings ----

cpu_ticks() { # pids...: utime+stime of each (all threads), summed
    local p st f total=0
    for p in "$@"; do
        st=$(cat "/proc/$p/stat" 2>/dev/null) || continue
        st=${st##*) }
        read -r -a f <<<"$st"
        total=$((total + f[11] + f[12]))
    done
    echo "$total"
}
rss_kb() { # pids...: VmRSS summed
    local p total=0 v
    for p in "$@"; do
        v=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null)
        total=$((total + ${v:-0}))
    done
    echo "$total"
}

# ---- servers ----

SERVER_PID=""
SERVER_LOG=""

server_env() {
    SENV=(TESSERA_DATABASE_URL="sqlite://$DB" TESSERA_LISTEN="127.0.0.1:$PORT"
        TESSERA_MAILER_AUTOCONFIRM=true TESSERA_LOG_REQUESTS=false
        TESSERA_HTTP_EVENT_LOOP=poll TESSERA_PASSWORD_HASH_WORKERS="$HASH_WORKERS"
        TESSERA_PASSWORD_HASH_MEMORY_KIB="$HASH_MEM_KIB"
        TESSERA_PASSWORD_HASH_ITERATIONS="$HASH_ITER"
        # limits no benchmark reaches: their cost is in the figures, not their refusals
        TESSERA_RATE_LIMIT_ACCOUNT=1000000000/1s,1000000 TESSERA_RATE_LIMIT_PROFILE_DEFAULT=1000000)
    [[ -n $JWT_SECRET ]] && SENV+=(TESSERA_JWT_SECRET="$JWT_SECRET")
    return 0
}

health_ok() { # port: GET /health answered 200 (no process spawned: the timing is tight)
    local r
    { exec 9<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
    printf 'GET /health HTTP/1.0\r\nHost: bench\r\n\r\n' >&9
    IFS= read -r -t 2 r <&9
    exec 9<&- 9>&-
    [[ $r == "HTTP/1."?" 200"* ]]
}

# start_server NAME [VAR=VALUE...]: starts tessera with the bench settings plus overrides,
# records start-up time (exec to first /health answer) and idle RSS right after.
start_server() {
    local name=$1
    shift
    server_env
    SERVER_LOG=$OUT/server-$name.log
    port_free "$PORT" || die "port $PORT was taken by another process"
    local t0 t1 i
    t0=$(date +%s%N)
    env "${SENV[@]}" "$@" "$TESSERA" serve >>"$SERVER_LOG" 2>&1 7>&- &
    SERVER_PID=$!
    track "$SERVER_PID"
    for ((i = 0; i < 3000; i++)); do
        health_ok "$PORT" && break
        is_running "$SERVER_PID" || { cat "$SERVER_LOG" >&7; die "server '$name' exited at start"; }
        sleep 0.005
    done
    t1=$(date +%s%N)
    health_ok "$PORT" || die "server '$name' did not answer /health within 15 s"
    local idle
    idle=$(rss_kb "$SERVER_PID")
    START_MS=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", (b - a) / 1e6}')
    row start "start-$name" "$name" 0 "$((++START_COUNT))" "" "$idle" "" \
        "startup_ms=$START_MS,idle_rss_kb=$idle"
    log "server '$name' up in ${START_MS} ms, idle RSS ${idle} kB (pid $SERVER_PID)"
}
START_COUNT=0

stop_server() {
    [[ -n $SERVER_PID ]] && stop_pids "$SERVER_PID"
    SERVER_PID=""
}

scrape() { # the server's /metrics into $M
    M=$(curl -s --max-time 5 "$BASE/metrics") || M=""
}
mval() { awk -v n="$1" '$1 == n {print $2; exit}' <<<"$M"; }

drain() { # waits (<= 120 s) until no request is in flight and the hash pool is idle
    local i q r f
    for ((i = 0; i < 1200; i++)); do
        scrape
        q=$(mval tessera_hashpool_queue_depth)
        r=$(mval tessera_hashpool_running)
        f=$(mval tessera_http_in_flight) # counts the /metrics request itself
        [[ ${q:-1} == 0 && ${r:-1} == 0 && ${f:-2} -le 1 ]] && return 0
        sleep 0.1
    done
    log "warning: server still busy after 120 s (queue=$q running=$r in_flight=$f)"
}

# ---- results ----

# row GROUP ID LABEL CONNS RUN CPU_TICKS RSS_KB OUTFILE EXTRAS(k=v,k=v)
row() {
    local IFS=$'\t'
    echo "$*" >>"$ROWS"
}

# wrk_run ID LABEL CONNS RUN PIDS EXTRAS -- WRK-ARGS...: one measured wrk run: server CPU
# and RSS of PIDS (space-separated) around it, raw output to bench/out/ID.runN.txt.
wrk_run() {
    local id=$1 label=$2 conns=$3 run=$4 pids=$5 extras=$6
    shift 7
    local outf=$OUT/$id.run$run.txt c0 c1 rss
    check_budget
    # shellcheck disable=SC2086
    c0=$(cpu_ticks $pids)
    run_wait timeout -s INT -k 5 $((DUR + 30)) wrk -t"$WRK_THREADS" -c"$conns" -d"${DUR}s" \
        --timeout "$WRK_TIMEOUT" --latency "$@" >"$outf" 2>&1 ||
        log "warning: wrk exited with status $? ($id run $run)"
    # shellcheck disable=SC2086
    c1=$(cpu_ticks $pids)
    # shellcheck disable=SC2086
    rss=$(rss_kb $pids)
    row "$GROUP" "$id" "$label" "$conns" "$run" "$((c1 - c0))" "$rss" "${outf#"$BENCH"/}" "$extras"
    log "$id run $run: $(awk '/Requests\/sec/ {print $2 " req/s"}' "$outf")" \
        "$(awk '$1 == "99%" {print "p99 " $2}' "$outf")"
}

warmup() { # unrecorded load: URL [wrk args...]
    run_wait timeout -s INT -k 5 $((WARMUP + 30)) wrk -t"$WRK_THREADS" -c"$BASE_CONNS" \
        -d"${WARMUP}s" --timeout "$WRK_TIMEOUT" "$@" >>"$OUT/warmup.txt" 2>&1 || true
}

# Runs wrk until every thread of a done-file script (user_cold.lua, refresh.lua in collect
# mode) has written its done file in $2, then interrupts it. run_until_done OUTFILE DONE_DIR
# MAX_SECONDS WRK-ARGS...
run_until_done() {
    local outf=$1 dir=$2 max=$3 p i
    shift 3
    rm -rf "$dir" && mkdir -p "$dir"
    timeout -s INT -k 5 $((max + 10)) wrk -t"$WRK_THREADS" -d"${max}s" --timeout "$WRK_TIMEOUT" \
        --latency "$@" >"$outf" 2>&1 7>&- &
    p=$!
    track "$p"
    for ((i = 0; i < max * 100; i++)); do
        (($(find "$dir" -name 'done.*' | wc -l) >= WRK_THREADS)) && break
        is_running "$p" || break
        sleep 0.01
    done
    kill -INT "$p" 2>/dev/null
    wait "$p"
    untrack "$p"
}

# ---- machine and versions ----

meta date "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
meta host_cpu "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
meta host_nproc "$NPROC"
meta host_kernel "$(uname -sr)"
meta host_mem "$(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
meta loadavg_start "$(cut -d' ' -f1-3 /proc/loadavg)"
meta tessera_version "$("$TESSERA" version 2>&1 | head -1)"
meta tessera_binary "${TESSERA_SRC#"$ROOT"/}, $(stat -c '%s bytes, built %y' "$TESSERA_SRC" | cut -d. -f1)"
meta git_commit "$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null)$(cd "$ROOT" && git diff --quiet HEAD -- src 2>/dev/null || echo ' (src/ has uncommitted changes)')"
meta wrk_version "$(wrk -v 2>&1 | head -1 | awk '{print $1, $2}')"
meta nginx_version "$(nginx -v 2>&1 | sed 's/^nginx version: //')"
meta node_version "$(node --version)"
meta gcc_version "$(gcc --version | head -1)"
meta libsodium_version "$(pkg-config --modversion libsodium 2>/dev/null || echo unknown)"
meta libmicrohttpd "$(ldd "$TESSERA" | awk '/microhttpd/ {print $3}' | xargs -r readlink -f | xargs -r basename)"
meta quick "$QUICK"
meta runs "$RUNS"
meta duration "$DUR"
meta wrk_threads "$WRK_THREADS"
meta wrk_timeout "$WRK_TIMEOUT"
meta poll_conns "$POLL_CONNS"
meta epoll_conns "$EPOLL_CONNS"
meta nofile "$NOFILE"
meta nofile_note "$NOFILE_NOTE"
meta base_conns "$BASE_CONNS"
meta pool_tokens "$POOL_TOKENS"
meta login_conns "$LOGIN_CONNS"
meta login_users "$LOGIN_USERS"
meta refresh_conns "$REFRESH_CONNS"
meta hash_workers "$HASH_WORKERS"
meta hash_mem_kib "$HASH_MEM_KIB"
meta hash_iter "$HASH_ITER"
meta jwt_alg "$([[ -n $JWT_SECRET ]] && echo HS256 || echo ES256)"
meta clk_tck "$CLK_TCK"
meta max_seconds "$MAX_SECONDS"

# ---- raw argon2id program ----

log "compiling bench/argon2_raw.c"
gcc -O2 -pthread -o "$TMP/argon2_raw" "$BENCH/argon2_raw.c" -lsodium 2>"$OUT/argon2_raw.build.txt" ||
    die "cannot build argon2_raw (see bench/out/argon2_raw.build.txt)"

# ---- database and fixtures ----

server_env
t0=$(date +%s%N)
env "${SENV[@]}" "$TESSERA" migrate >"$OUT/migrate.log" 2>&1 || { cat "$OUT/migrate.log" >&7; die "migrate failed"; }
meta migrate_ms "$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN {printf "%.1f", (b - a) / 1e6}')"

# Fixtures come from a server on the same database whose password hashing is nearly free
# (argon2id m=8 KiB t=1), so that 1,000+ sign-ups take seconds; the tokens and sessions
# it creates are signed with the same keys as those of the measured servers. The users
# of the password grant are created later by a measured server, with the real cost.
GROUP="start"
log "fixtures: $POOL_TOKENS pool users, $RUNS x $REFRESH_CONNS refresh sessions, $COLD_TOKENS cold tokens"
start_server fixtures TESSERA_PASSWORD_HASH_MEMORY_KIB=8 TESSERA_PASSWORD_HASH_ITERATIONS=1 \
    TESSERA_JWT_EXP=86400
CHAINS=$([[ -n $JWT_SECRET ]] && echo "$COLD_TOKENS" || echo 64)
run_wait timeout -k 5 900 node "$BENCH/fixtures.mjs" "$BASE" "$TMP/fx" bulk pool="$POOL_TOKENS" \
    refresh_conns="$REFRESH_CONNS" refresh_sets="$RUNS" chains="$CHAINS" >>"$OUT/fixtures.log" 2>&1 ||
    { cat "$OUT/fixtures.log" >&7; die "fixtures failed"; }
if [[ -n $JWT_SECRET ]]; then
    cp "$TMP/fx/cold_signup_tokens.txt" "$TMP/fx/cold.all"
else
    BENCH_REFRESH_TOKENS=$TMP/fx/cold_heads.txt \
        BENCH_COLLECT=$TMP/fx/cold BENCH_COLLECT_TARGET=$(((COLD_TOKENS + WRK_THREADS - 1) / WRK_THREADS)) \
        BENCH_DONE_DIR=$TMP/done-collect \
        run_until_done "$OUT/fixtures-cold.txt" "$TMP/done-collect" 600 -c64 -s "$BENCH/refresh.lua" "$BASE"
fi
cat "$TMP"/fx/cold.* | awk 'NF' | sort -u | shuf | head -n "$COLD_TOKENS" >"$TMP/fx/cold_tokens.txt"
COLD_GOT=$(wc -l <"$TMP/fx/cold_tokens.txt")
meta cold_tokens "$COLD_GOT"
((COLD_GOT > 0)) || die "no cold tokens were minted (see bench/out/fixtures-cold.txt)"
((COLD_GOT < COLD_TOKENS)) && log "note: only $COLD_GOT distinct cold tokens of $COLD_TOKENS asked for"
head -n 1 "$TMP/fx/pool_tokens.txt" >"$TMP/fx/single_token.txt"
SINGLE_TOKEN=$(cat "$TMP/fx/single_token.txt")
stop_server
# The fixture server's start is not a measured start.
sed -i '/\tstart-fixtures\t/d' "$ROWS"
START_COUNT=0
log "$(tail -1 "$OUT/fixtures.log"); $COLD_GOT cold tokens"

# ---- (d) nginx ceiling ----

check_budget
GROUP="d"
cat >"$TMP/nginx/nginx.conf" <<EOF
# The ceiling: nginx's cheapest possible answer on the same loopback, same wrk.
# worker_processes $NPROC = the cores of this machine, as many as Tessera's HTTP threads.
worker_processes $NPROC;
pid nginx.pid;
error_log error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
    client_body_temp_path tmp_body;
    proxy_temp_path tmp_proxy;
    fastcgi_temp_path tmp_fastcgi;
    uwsgi_temp_path tmp_uwsgi;
    scgi_temp_path tmp_scgi;
    keepalive_timeout 65s;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / { return 200 "ok"; }
    }
}
EOF
cp "$TMP/nginx/nginx.conf" "$OUT/nginx.conf"
port_free "$NGINX_PORT" || NGINX_PORT=$(pick_port)
sed -i "s/listen 127.0.0.1:[0-9]*;/listen 127.0.0.1:$NGINX_PORT;/" "$TMP/nginx/nginx.conf"
nginx -c "$TMP/nginx/nginx.conf" -p "$TMP/nginx/" -e "$TMP/nginx/error.log" -g 'daemon off;' \
    >"$OUT/nginx.log" 2>&1 7>&- &
NGINX_PID=$!
track "$NGINX_PID"
for ((i = 0; i < 500; i++)); do
    curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$NGINX_PORT/" && break
    is_running "$NGINX_PID" || { cat "$OUT/nginx.log" "$TMP/nginx/error.log" >&7; die "nginx exited"; }
    sleep 0.01
done
NGINX_WORKERS=$(cat "/proc/$NGINX_PID/task/$NGINX_PID/children" 2>/dev/null)
# shellcheck disable=SC2086
track $NGINX_WORKERS
log "nginx up: master $NGINX_PID, workers $NGINX_WORKERS"
warmup "http://127.0.0.1:$NGINX_PORT/"
for ((r = 1; r <= RUNS; r++)); do
    wrk_run "nginx-c$BASE_CONNS" "nginx return 200 \"ok\"" "$BASE_CONNS" "$r" \
        "$NGINX_PID $NGINX_WORKERS" "" -- "http://127.0.0.1:$NGINX_PORT/"
done
# shellcheck disable=SC2086
stop_pids "$NGINX_PID" $NGINX_WORKERS

# ---- (a), (b), (c) on one poll-mode server ----

GROUP="start"
start_server poll
run_wait timeout -k 5 300 node "$BENCH/fixtures.mjs" "$BASE" "$TMP/fx" login users="$LOGIN_USERS" \
    >>"$OUT/fixtures.log" 2>&1 || { cat "$OUT/fixtures.log" >&7; die "login users failed"; }
AUTH=(-H "Authorization: Bearer $SINGLE_TOKEN")
warmup "${AUTH[@]}" "$BASE/user"

log "(a) GET /user, one token, poll: $POLL_CONNS connections"
GROUP="a-poll"
for ((r = 1; r <= RUNS; r++)); do
    for c in $POLL_CONNS; do
        wrk_run "poll-single-c$c" "poll, one token" "$c" "$r" "$SERVER_PID" "" -- "${AUTH[@]}" "$BASE/user"
    done
done

log "(a) GET /user, pool of $POOL_TOKENS tokens, warm"
GROUP="a-pool"
BENCH_TOKENS=$TMP/fx/pool_tokens.txt warmup -s "$BENCH/user_pool.lua" "$BASE/user"
for ((r = 1; r <= RUNS; r++)); do
    scrape
    h0=$(mval tessera_token_cache_hits_total) m0=$(mval tessera_token_cache_misses_total)
    BENCH_TOKENS=$TMP/fx/pool_tokens.txt wrk_run "pool-warm-c$BASE_CONNS" \
        "pool of $POOL_TOKENS tokens, warm" "$BASE_CONNS" "$r" "$SERVER_PID" "" -- \
        -s "$BENCH/user_pool.lua" "$BASE/user"
    scrape
    sed -i '$ s/\t$/\tcache_hits='$(($(mval tessera_token_cache_hits_total) - h0))',cache_misses='$(($(mval tessera_token_cache_misses_total) - m0))'/' "$ROWS"
done

# Raw argon2id and the password grant alternate, run by run, so that both see the same
# machine; the server is idle (hash pool drained) while the raw program runs.
log "(b) raw argon2id ($HASH_WORKERS thread(s), m=$HASH_MEM_KIB KiB t=$HASH_ITER) and password grant" \
    "($LOGIN_CONNS connections, $LOGIN_USERS users), alternating"
export BENCH_USERS=$TMP/fx/login_users.txt
for ((r = 1; r <= RUNS; r++)); do
    check_budget
    drain
    GROUP="b-raw"
    outf=$OUT/raw-argon2.run$r.txt
    run_wait timeout -k 5 $((DUR + 60)) "$TMP/argon2_raw" "$HASH_WORKERS" "$DUR" "$HASH_MEM_KIB" \
        "$HASH_ITER" >"$outf" 2>&1 || die "argon2_raw failed: $(cat "$outf")"
    row "$GROUP" raw-argon2 "crypto_pwhash_str x $HASH_WORKERS threads" 0 "$r" "" "" "${outf#"$BENCH"/}" ""
    log "raw-argon2 run $r: $(cat "$outf")"

    GROUP="b-login"
    scrape
    j0=$(mval tessera_hashpool_jobs_total) rj0=$(mval tessera_hashpool_rejected_total)
    rs0=$(mval tessera_hashpool_run_seconds_total) ws0=$(mval tessera_hashpool_wait_seconds_total)
    wrk_run "login-c$LOGIN_CONNS" "password grant" "$LOGIN_CONNS" "$r" "$SERVER_PID" "" -- \
        -s "$BENCH/login.lua" "$BASE"
    drain
    scrape
    ex=$(awk -v j0="$j0" -v j1="$(mval tessera_hashpool_jobs_total)" -v r0="$rj0" \
        -v r1="$(mval tessera_hashpool_rejected_total)" -v s0="$rs0" \
        -v s1="$(mval tessera_hashpool_run_seconds_total)" -v w0="$ws0" \
        -v w1="$(mval tessera_hashpool_wait_seconds_total)" \
        'BEGIN {j = j1 - j0; printf "pool_jobs=%d,pool_rejected=%d,pool_run_ms_per_job=%.2f,pool_wait_ms_per_job=%.1f",
                j, r1 - r0, j ? (s1 - s0) * 1000 / j : 0, j ? (w1 - w0) * 1000 / j : 0}')
    sed -i '$ s/\t$/\t'"$ex"'/' "$ROWS"
done

log "(b) GET /user at $BASE_CONNS connections while logins saturate the hash pool"
GROUP="b-concurrent"
for ((r = 1; r <= RUNS; r++)); do
    check_budget
    drain
    c0=$(cpu_ticks "$SERVER_PID")
    lout=$OUT/conc-login-c$LOGIN_CONNS.run$r.txt
    timeout -s INT -k 5 $((DUR + 40)) wrk -t"$WRK_THREADS" -c"$LOGIN_CONNS" -d"$((DUR + 2))s" \
        --timeout "$WRK_TIMEOUT" --latency -s "$BENCH/login.lua" "$BASE" >"$lout" 2>&1 7>&- &
    lpid=$!
    track "$lpid"
    sleep 1
    scrape
    sat="pool_running=$(mval tessera_hashpool_running),pool_queue=$(mval tessera_hashpool_queue_depth)"
    uout=$OUT/conc-user-c$BASE_CONNS.run$r.txt
    run_wait timeout -s INT -k 5 $((DUR + 30)) wrk -t"$WRK_THREADS" -c"$BASE_CONNS" -d"${DUR}s" \
        --timeout "$WRK_TIMEOUT" --latency "${AUTH[@]}" "$BASE/user" >"$uout" 2>&1
    wait "$lpid"
    untrack "$lpid"
    c1=$(cpu_ticks "$SERVER_PID")
    rss=$(rss_kb "$SERVER_PID")
    row "$GROUP" "conc-user-c$BASE_CONNS" "GET /user beside logins" "$BASE_CONNS" "$r" \
        "$((c1 - c0))" "$rss" "${uout#"$BENCH"/}" "$sat,cpu_shared=1"
    row "$GROUP" "conc-login-c$LOGIN_CONNS" "password grant beside GET /user" "$LOGIN_CONNS" "$r" \
        "$((c1 - c0))" "$rss" "${lout#"$BENCH"/}" "cpu_shared=1"
    log "concurrent run $r: /user $(awk '/Requests\/sec/ {print $2}' "$uout") req/s" \
        "p99 $(awk '$1 == "99%" {print $2}' "$uout"); logins $(awk '/Requests\/sec/ {print $2}' "$lout")/s; $sat"
done
drain

log "(c) refresh grant, $REFRESH_CONNS connections, one fresh session per connection"
GROUP="c-refresh"
for ((r = 1; r <= RUNS; r++)); do
    BENCH_REFRESH_TOKENS=$TMP/fx/refresh_set$r.txt wrk_run "refresh-c$REFRESH_CONNS" \
        "refresh grant" "$REFRESH_CONNS" "$r" "$SERVER_PID" "" -- -s "$BENCH/refresh.lua" "$BASE"
done
stop_server

# ---- (a) cold token pool: a fresh server (empty cache) per run ----

log "(a) GET /user, $COLD_GOT never-seen tokens, each once, fresh server per run"
for ((r = 1; r <= RUNS; r++)); do
    check_budget
    GROUP=start
    start_server "cold$r"
    GROUP=a-pool
    outf=$OUT/pool-cold-c$BASE_CONNS.run$r.txt
    scrape
    m0=$(mval tessera_token_cache_misses_total) h0=$(mval tessera_token_cache_hits_total)
    c0=$(cpu_ticks "$SERVER_PID")
    BENCH_TOKENS=$TMP/fx/cold_tokens.txt BENCH_DONE_DIR=$TMP/done-cold \
        run_until_done "$outf" "$TMP/done-cold" $((COLD_TOKENS / 100 + 120)) -c"$BASE_CONNS" \
        -s "$BENCH/user_cold.lua" "$BASE/user"
    c1=$(cpu_ticks "$SERVER_PID")
    rss=$(rss_kb "$SERVER_PID")
    scrape
    row "$GROUP" "pool-cold-c$BASE_CONNS" "$COLD_GOT tokens, cold (each used once)" "$BASE_CONNS" \
        "$r" "$((c1 - c0))" "$rss" "${outf#"$BENCH"/}" \
        "cache_hits=$(($(mval tessera_token_cache_hits_total) - h0)),cache_misses=$(($(mval tessera_token_cache_misses_total) - m0))"
    log "pool-cold run $r: $(grep '^BENCH' "$outf")"
    stop_server
done

# ---- (a) epoll ----

GROUP="start"
start_server epoll TESSERA_HTTP_EVENT_LOOP=epoll
warmup "${AUTH[@]}" "$BASE/user"
log "(a) GET /user, one token, epoll: $EPOLL_CONNS connections"
GROUP="a-epoll"
for ((r = 1; r <= RUNS; r++)); do
    for c in $EPOLL_CONNS; do
        wrk_run "epoll-single-c$c" "epoll, one token" "$c" "$r" "$SERVER_PID" "" -- "${AUTH[@]}" "$BASE/user"
    done
done
stop_server

# ---- (a) with request logging ----

# LOG_REQUESTS=false and =true alternate, a fresh server each, so that the difference is
# not drowned by drift. The request log goes where the server's output goes here: an
# append-mode file (bench/out/server-logreq*.log), measured and emptied after each run.
log "(a) GET /user, one token, $BASE_CONNS connections: TESSERA_LOG_REQUESTS=false vs true"
for ((r = 1; r <= RUNS; r++)); do
    for lr in false true; do
        check_budget
        name=$([[ $lr == true ]] && echo logreq || echo nolog)
        GROUP="start"
        start_server "$name$r" TESSERA_LOG_REQUESTS=$lr
        warmup "${AUTH[@]}" "$BASE/user"
        GROUP="a-logreq"
        b0=$(stat -c %s "$SERVER_LOG")
        wrk_run "$name-single-c$BASE_CONNS" "poll, one token, LOG_REQUESTS=$lr" "$BASE_CONNS" "$r" \
            "$SERVER_PID" "" -- "${AUTH[@]}" "$BASE/user"
        b1=$(stat -c %s "$SERVER_LOG")
        sed -i '$ s/\t$/\tlog_bytes='$((b1 - b0))'/' "$ROWS"
        [[ $lr == true ]] && tail -n 2 "$SERVER_LOG" >"$OUT/logreq-sample.txt" && : >"$SERVER_LOG"
        stop_server
    done
done

meta loadavg_end "$(cut -d' ' -f1-3 /proc/loadavg)"
meta total_seconds "$((SECONDS - START_TIME))"
meta server_banner "$(grep -m1 -o 'listening on .*"' "$OUT/server-poll.log" | sed 's/"$//')"

# ---- report ----

node "$BENCH/report.mjs" "$OUT" "$BENCH/RESULTS.md" || die "report failed"
log "done in $((SECONDS - START_TIME)) s: bench/RESULTS.md, raw outputs in bench/out/"
