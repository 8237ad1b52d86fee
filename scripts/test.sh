#!/usr/bin/env bash
# make test: every test, twice — a gcc -O2 build and a clang ASan+UBSan build.
# Prints one closing line "N passed, N failed" over all suites and exits non-zero on
# any failure.
set -uo pipefail
cd "$(dirname "$0")/.."

passed=0
failed=0
failures=()

record() { # name rc passed failed
    passed=$((passed + $3))
    failed=$((failed + $4))
    if [ "$2" -ne 0 ] && [ "$4" -eq 0 ]; then failed=$((failed + 1)); fi
    if [ "$2" -ne 0 ]; then failures+=("$1"); fi
}

static_checks() {
    local rc=0
    bash scripts/check-includes.sh || rc=1
    bash scripts/banned.sh || rc=1
    clang-format --dry-run --Werror $(git ls-files '*.c' '*.h' 2>/dev/null || find src tests -name '*.[ch]') || rc=1
    record "static checks" $rc $((rc == 0 ? 1 : 0)) $rc
}

unit() { # build dir
    local out rc p f
    # With a PostgreSQL cluster up, the store's unit tests run on both backends.
    out=$(cd "$1" && env "${PG_ENV[@]}" ctest --output-on-failure 2>&1); rc=$?
    echo "$out" | tail -n 25
    p=$(echo "$out" | grep -oE '[0-9]+ tests failed out of [0-9]+' | awk '{print $6-$1}')
    f=$(echo "$out" | grep -oE '[0-9]+ tests failed' | awk '{print $1}')
    record "unit ($1)" $rc "${p:-0}" "${f:-0}"
}

# The black-box suite runs on every backend in TEST_BACKENDS: SQLite files, and databases in a
# throwaway PostgreSQL cluster that this script starts and stops (scripts/pg.sh).
TEST_BACKENDS=${TEST_BACKENDS:-sqlite postgres}
PG_DIR=""
PG_ENV=()
start_pg() {
    PG_DIR=$(mktemp -d /tmp/tessera-pg.XXXXXX)
    rmdir "$PG_DIR"
    local vars
    if vars=$(bash scripts/pg.sh start "$PG_DIR"); then
        mapfile -t PG_ENV <<<"$vars"
        trap 'bash scripts/pg.sh stop "$PG_DIR"' EXIT
        return 0
    fi
    record "postgres cluster" 1 0 1
    return 1
}

blackbox() { # binary
    local backend
    for backend in $TEST_BACKENDS; do
        case $backend in
        sqlite) blackbox_on "$1" sqlite ;;
        postgres)
            if [ ${#PG_ENV[@]} -gt 0 ] || start_pg; then
                blackbox_on "$1" postgres "${PG_ENV[@]}"
            fi
            ;;
        esac
    done
}

blackbox_on() { # binary backend [VAR=value...]
    local bin=$1 backend=$2 out rc p f
    shift 2
    echo "-- black-box on $backend ($bin)"
    # A test never waits forever (--test-timeout, 5 min each), a file whose tests are done exits
    # even if a library left a handle open (--test-force-exit), and a whole suite is bounded.
    out=$(env "$@" TESSERA_BIN="$PWD/$bin" timeout -k 10 1800 node --test --test-concurrency=1 \
        --test-timeout=300000 --test-force-exit tests/blackbox/test/ 2>&1); rc=$?
    echo "$out" | grep -E '^(not ok|# (tests|pass|fail|skipped|duration_ms))' | tail -n 40
    [ $rc -ne 0 ] && echo "$out" | grep -B2 -A30 '^not ok' | head -n 200
    p=$(echo "$out" | grep -E '^# pass ' | awk '{print $3}')
    f=$(echo "$out" | grep -E '^# fail ' | awk '{print $3}')
    record "black-box $backend ($bin)" $rc "${p:-0}" "${f:-0}"
}

echo "== static checks"
static_checks

if [[ " $TEST_BACKENDS " == *" postgres "* ]]; then
    echo "== PostgreSQL cluster for the tests"
    start_pg && echo "${PG_ENV[*]}"
fi

echo "== gcc -O2 build"
if make -s build; then
    unit build
    blackbox build/tessera
else
    record "gcc build" 1 0 1
fi

echo "== clang ASan+UBSan build"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
if make -s asan; then
    unit build-asan
    blackbox build-asan/tessera
else
    record "asan build" 1 0 1
fi

echo
if [ ${#failures[@]} -gt 0 ]; then
    echo "failing suites: ${failures[*]}"
fi
echo "${passed} passed, ${failed} failed"
[ "$failed" -eq 0 ] && [ ${#failures[@]} -eq 0 ]
