#!/usr/bin/env bash
# make valgrind: the black-box suite with every `tessera serve` it starts running under valgrind
# memcheck (issue 7), on the gcc -O2 -g build. A long run (memcheck is 20-50 times slower), kept
# out of make test.
#
# Each test file runs on its own; every server writes its own report (VG_OUT/<file>.<pid>.log).
# Prints, per file, the tests passed and failed, the number of server processes, memcheck's
# errors and the bytes definitely and indirectly lost, then the totals. Exits non-zero when any
# server reported an error or a definite or indirect leak. A server killed (kill -9 tests, or
# the harness after its stop bound) leaves no report: counted apart ("nosum"). Test failures
# are printed but, under valgrind's slowness, may be timing (see the output).
#
# Environment (all optional):
#   VG_BUILD=build                  the build directory (its tessera binary; VG_BIN=FILE: another)
#   VG_TESTS="signup user ..."      test files (names under tests/blackbox/test/, without
#                                   .test.mjs); default: all of them
#   VG_OUT=DIR                      where the reports go (default: a new /tmp directory, kept)
#   VG_MAX_SECONDS=10800            the whole run's bound: files not started by then are skipped
#   VG_FILE_SECONDS=1800            one file's bound
#   TEST_BACKENDS=sqlite            or postgres (a throwaway cluster, scripts/pg.sh)
#   TESSERA_TEST_SLOWDOWN=20        how much longer the harness waits for a server (lib/server.mjs)
set -uo pipefail
cd "$(dirname "$0")/.."

BUILD=${VG_BUILD:-build}
BIN=${VG_BIN:-$PWD/$BUILD/tessera}
MAX=${VG_MAX_SECONDS:-10800}
FILE_MAX=${VG_FILE_SECONDS:-1800}
BACKEND=${TEST_BACKENDS:-sqlite}
command -v valgrind >/dev/null || { echo "valgrind: not installed (make deps)"; exit 2; }
[ -x "$BIN" ] || { echo "valgrind: $BIN not found (make build)"; exit 2; }
OUT=${VG_OUT:-$(mktemp -d /tmp/tessera-valgrind.XXXXXX)}
mkdir -p "$OUT"
# Every test file holds servers, clients and their sockets: lift the descriptor limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

if [ -n "${VG_TESTS:-}" ]; then
    files=()
    for t in $VG_TESTS; do files+=("tests/blackbox/test/$t.test.mjs"); done
else
    mapfile -t files < <(ls tests/blackbox/test/*.test.mjs)
fi

PG_ENV=()
if [ "$BACKEND" = postgres ]; then
    PG_DIR=$(mktemp -d /tmp/tessera-vg-pg.XXXXXX)
    rmdir "$PG_DIR"
    mapfile -t PG_ENV < <(bash scripts/pg.sh start "$PG_DIR") || { echo "valgrind: no PostgreSQL"; exit 2; }
    trap 'bash scripts/pg.sh stop "$PG_DIR"' EXIT
fi

# --errors-for-leak-kinds: a definite or indirect leak counts as an error (and the server's
# exit status becomes 99, which the harness reports as an unclean stop); "possibly" and
# "still reachable" blocks (threads' stacks, libraries' one-time state) are listed, not counted.
# VG_FILE (inherited by the servers; only TESSERA_ variables are filtered) names the reports.
WRAPPER="valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite,indirect \
--errors-for-leak-kinds=definite,indirect --error-exitcode=99 --num-callers=30 \
--log-file=$OUT/%q{VG_FILE}.%p.log"
[ -f tests/valgrind.supp ] && WRAPPER+=" --suppressions=$PWD/tests/valgrind.supp"

echo "valgrind: $BIN on $BACKEND, ${#files[@]} test files, reports in $OUT"
printf '%-28s %6s %5s %7s %6s %6s %10s %10s %6s\n' file seconds pass fail servers errors definite indirect nosum
start=$(date +%s)
bad=0
tot_servers=0 tot_err=0 tot_def=0 tot_ind=0 tot_nosum=0 tot_pass=0 tot_fail=0 ran=0
for f in "${files[@]}"; do
    name=$(basename "$f" .test.mjs)
    if (($(date +%s) - start > MAX)); then
        echo "$name: skipped (VG_MAX_SECONDS reached)"
        continue
    fi
    t0=$(date +%s)
    out=$(env "${PG_ENV[@]}" VG_FILE="$name" TESSERA_BIN="$BIN" TESSERA_TEST_WRAPPER="$WRAPPER" \
        timeout -k 30 "$FILE_MAX" node --test --test-concurrency=1 --test-force-exit \
        --test-timeout=$((FILE_MAX * 1000)) "$f" 2>&1)
    secs=$(($(date +%s) - t0))
    echo "$out" >"$OUT/$name.tap"
    pass=$(echo "$out" | grep -E '^# pass ' | awk '{print $3}')
    fail=$(echo "$out" | grep -E '^# fail ' | awk '{print $3}')
    servers=0 err=0 def=0 ind=0 nosum=0
    for log in "$OUT/$name".*.log; do
        [ -e "$log" ] || continue
        servers=$((servers + 1))
        if ! grep -q 'ERROR SUMMARY' "$log"; then
            nosum=$((nosum + 1))
            continue
        fi
        e=$(grep -oE 'ERROR SUMMARY: [0-9,]+' "$log" | tail -n 1 | grep -oE '[0-9,]+' | tr -d ,)
        d=$(grep -oE 'definitely lost: [0-9,]+ bytes' "$log" | tail -n 1 | grep -oE '[0-9,]+' | tr -d ,)
        i=$(grep -oE 'indirectly lost: [0-9,]+ bytes' "$log" | tail -n 1 | grep -oE '[0-9,]+' | tr -d ,)
        err=$((err + ${e:-0}))
        def=$((def + ${d:-0}))
        ind=$((ind + ${i:-0}))
    done
    printf '%-28s %6s %5s %7s %6s %6s %10s %10s %6s\n' "$name" "$secs" "${pass:-?}" "${fail:-?}" \
        "$servers" "$err" "$def" "$ind" "$nosum"
    [ "${fail:-1}" != 0 ] && echo "$out" | grep -E '^not ok' | sed 's/^/    /' | head -n 10
    ((err + def + ind > 0)) && bad=1
    tot_servers=$((tot_servers + servers)) tot_err=$((tot_err + err)) tot_def=$((tot_def + def))
    tot_ind=$((tot_ind + ind)) tot_nosum=$((tot_nosum + nosum)) ran=$((ran + 1))
    tot_pass=$((tot_pass + ${pass:-0})) tot_fail=$((tot_fail + ${fail:-0}))
done
echo "valgrind: $ran files in $(($(date +%s) - start)) s: tests $tot_pass passed, $tot_fail failed;" \
    "$tot_servers servers, $tot_err errors, $tot_def bytes definitely lost, $tot_ind indirectly," \
    "$tot_nosum without a report (killed)"
# The first report of each kind, for the reader.
grep -l -E 'Invalid (read|write)|uninitialised|definitely lost in|indirectly lost in' "$OUT"/*.log 2>/dev/null |
    head -n 5 | while read -r log; do
        echo "---- $log"
        grep -A 25 -m 3 -E '^==[0-9]+== (Invalid|Conditional|Use of uninit|[0-9,]+ .*(definitely|indirectly) lost)' "$log" | head -n 60
    done
exit $bad
