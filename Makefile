# Tessera: the two commands are `make run` and `make test` (see README.md).
# Everything else here serves them.

BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc)
CC_ASAN    ?= clang-14
FUZZ_BUILD ?= build-fuzz
CC_FUZZ    ?= clang-14
FUZZ_SECONDS ?= 60

.PHONY: all build asan deps run test test-unit test-blackbox test-asan bench fuzz format \
        format-check check-includes clean

all: build

deps:
	@bash scripts/deps.sh

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O2 -g"

build: $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

$(ASAN_BUILD)/build.ninja:
	CC=$(CC_ASAN) cmake -S . -B $(ASAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DTS_SANITIZE=ON

asan: $(ASAN_BUILD)/build.ninja
	cmake --build $(ASAN_BUILD) -j $(JOBS)

# ThreadSanitizer (clang): scripts/test.sh runs the threaded unit and black-box tests on it.
TSAN_BUILD ?= build-tsan
CC_TSAN    ?= $(CC_ASAN)
.PHONY: tsan

$(TSAN_BUILD)/build.ninja:
	CC=$(CC_TSAN) cmake -S . -B $(TSAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DTS_TSAN=ON

tsan: $(TSAN_BUILD)/build.ninja
	cmake --build $(TSAN_BUILD) -j $(JOBS)

# Installs what is missing, builds, and serves on ./tessera.db (TESSERA_* variables apply).
run: deps build
	./$(BUILD)/tessera serve

# Installs, builds twice (gcc -O2, clang ASan+UBSan) and runs every test against both, then the
# threaded tests against a third build (clang TSan).
test: deps
	@bash scripts/test.sh

bench: deps build
	@bash bench/run.sh

# libFuzzer (clang, ASan+UBSan): every tests/fuzz/fuzz_<x>.c for FUZZ_SECONDS seconds on its
# committed corpus and dictionary; new inputs and crashes go to a temporary directory
# (scripts/fuzz.sh: FUZZ_TARGETS, FUZZ_OUT, FUZZ_ARGS). Fails when anything is found.
$(FUZZ_BUILD)/build.ninja:
	CC=$(CC_FUZZ) cmake -S . -B $(FUZZ_BUILD) -G Ninja -DTS_FUZZ=ON -DTS_TESTS=OFF

fuzz: $(FUZZ_BUILD)/build.ninja
	cmake --build $(FUZZ_BUILD) -j $(JOBS) --target \
		$(patsubst tests/fuzz/%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
	@FUZZ_BUILD=$(FUZZ_BUILD) FUZZ_SECONDS=$(FUZZ_SECONDS) bash scripts/fuzz.sh

# The black-box suite with every server under valgrind memcheck (scripts/valgrind.sh: VG_TESTS,
# VG_OUT, TEST_BACKENDS): hours, not part of make test.
.PHONY: valgrind
valgrind: deps build
	@VG_BUILD=$(BUILD) bash scripts/valgrind.sh

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

format-check:
	clang-format --dry-run --Werror $$(git ls-files '*.c' '*.h')

check-includes:
	@bash scripts/check-includes.sh

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD) $(TSAN_BUILD)
