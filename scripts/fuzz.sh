#!/usr/bin/env bash
# make fuzz: runs every libFuzzer target of tests/fuzz/ (built by `make fuzz` with clang and
# -DTS_FUZZ=ON into $FUZZ_BUILD) for $FUZZ_SECONDS seconds each, on its committed corpus
# (tests/fuzz/corpus/<x>/, read only) and dictionary (tests/fuzz/dict/<x>.dict, when there is
# one). New inputs go to $FUZZ_OUT/<x>/corpus/ and crashes, leaks and timeouts to $FUZZ_OUT/<x>/
# (a fresh directory under /tmp unless FUZZ_OUT is set), never to the committed corpus. Exits
# non-zero when any target found something. FUZZ_TARGETS="jws form" runs only those;
# FUZZ_ARGS adds libFuzzer flags.
set -uo pipefail
cd "$(dirname "$0")/.."

build=${FUZZ_BUILD:-build-fuzz}
seconds=${FUZZ_SECONDS:-60}
out=${FUZZ_OUT:-$(mktemp -d /tmp/tessera-fuzz.XXXXXX)}
targets=${FUZZ_TARGETS:-$(ls tests/fuzz/fuzz_*.c | sed -E 's|.*/fuzz_(.*)\.c|\1|')}
failed=()

echo "fuzz: ${seconds}s per target; new inputs and findings under $out"
for t in $targets; do
    bin=$build/fuzz_$t
    if [ ! -x "$bin" ]; then
        echo "fuzz: $bin is missing (make fuzz builds it)"
        failed+=("$t")
        continue
    fi
    mkdir -p "$out/$t/corpus"
    dict=()
    [ -f "tests/fuzz/dict/$t.dict" ] && dict=("-dict=tests/fuzz/dict/$t.dict")
    echo "== fuzz_$t"
    # The first directory receives what the fuzzer finds; the committed one is only read.
    # shellcheck disable=SC2086
    "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$out/$t/" "${dict[@]}" ${FUZZ_ARGS:-} \
        "$out/$t/corpus" "tests/fuzz/corpus/$t" >"$out/$t/log" 2>&1
    rc=$?
    grep -E '^(#[0-9]+.*DONE|stat::number_of_executed_units|stat::peak_rss_mb|Done [0-9]+ runs)' \
        "$out/$t/log" | head -n 4
    if [ $rc -ne 0 ]; then
        echo "fuzz_$t FAILED (exit $rc): $out/$t/log"
        grep -E '^(==[0-9]+==ERROR|SUMMARY|artifact_prefix|Test unit written)' "$out/$t/log" |
            head -n 6
        failed+=("$t")
    fi
done

echo
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: findings or failures in: ${failed[*]} (logs and reproducers under $out)"
    exit 1
fi
echo "fuzz: no crash, leak or failed property; new inputs under $out/<target>/corpus"
