# trimodal: a thin layer over CMake. `make help` lists the targets.
BUILD      ?= build
ASAN_BUILD ?= build/asan
FUZZ_BUILD ?= build/fuzz
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
FUZZ_SECONDS ?= 30
CMAKE      ?= cmake

.PHONY: all build deps test test-asan test-fast bench fuzz demo clean help

all: build

help:
	@echo "make            build build/bin/trimodal and build/lib/libtrimodal.{a,so}"
	@echo "make deps       install the Debian packages the build and tests need (apt)"
	@echo "make test       deps, build, run every test (ctest) and again under ASan+UBSan"
	@echo "make test-fast  build and run the tests without the sanitizer pass"
	@echo "make bench      kernel and model benchmarks beside PyTorch/OpenBLAS (JSON lines)"
	@echo "make fuzz       build the libFuzzer harnesses and run each FUZZ_SECONDS (default 30)"
	@echo "make demo       deps, build, FashionTri, train, evaluate, HTML report (DEMO_QUICK=1: minutes)"
	@echo "make clean      remove build/"

deps:
	@scripts/deps.sh

$(BUILD)/CMakeCache.txt:
	$(CMAKE) -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release

build: $(BUILD)/CMakeCache.txt
	$(CMAKE) --build $(BUILD) -j $(JOBS)

test-fast: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

test-asan:
	$(CMAKE) -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTM_SANITIZE=ON
	$(CMAKE) --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j $(JOBS)

test: deps
	$(MAKE) test-fast
	$(MAKE) test-asan

# Only JSON lines reach stdout; the build's chatter goes to stderr.
bench: deps
	@$(MAKE) --no-print-directory build 1>&2
	@scripts/bench.sh $(BUILD)

fuzz: deps
	CC=clang CXX=clang++ $(CMAKE) -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTM_FUZZ=ON \
	  -DCMAKE_C_FLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer" \
	  -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer"
	$(CMAKE) --build $(FUZZ_BUILD) -j $(JOBS)
	@scripts/fuzz.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

demo: deps build
	@scripts/demo.sh $(BUILD)

clean:
	rm -rf $(BUILD)
