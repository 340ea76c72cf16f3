# tether: `make` builds, `make test` runs every check, `make demo` shows the effect,
# `make soak` runs traffic with faults against a sanitizer build,
# `make bench` compares with direct connections, HAProxy, nginx and H2O.
# Each target installs the Debian packages it needs first (scripts/setup.sh).

BUILD       ?= build
ASAN_BUILD  ?= build-asan
BENCH_BUILD ?= build-release
PYTHON      ?= /usr/bin/python3
MESON_OPTS  ?=
SOAK_SECONDS ?= 900

.PHONY: all setup test unit asan unit-asan soak integration format format-check demo bench clean

all: setup $(BUILD)/build.ninja
	ninja -C $(BUILD)

setup:
	@./scripts/setup.sh

$(BUILD)/build.ninja:
	meson setup $(BUILD) $(MESON_OPTS)

$(ASAN_BUILD)/build.ninja:
	CC=clang meson setup $(ASAN_BUILD) -Db_sanitize=address,undefined -Db_lundef=false \
		-Dbuildtype=debug $(MESON_OPTS)

$(BENCH_BUILD)/build.ninja:
	meson setup $(BENCH_BUILD) -Dbuildtype=release -Dtests=false $(MESON_OPTS)

test: setup
	@$(PYTHON) scripts/run_tests.py

unit: all
	meson test -C $(BUILD) --print-errorlogs

asan: setup $(ASAN_BUILD)/build.ninja
	ninja -C $(ASAN_BUILD)

unit-asan: asan
	meson test -C $(ASAN_BUILD) --print-errorlogs

# Mixed traffic with injected faults against the ASan+UBSan tetherd for SOAK_SECONDS
# (docs/operations.md#the-soak); results in bench/results/soak-<time>/.
soak: asan
	$(PYTHON) tests/soak/soak.py --tetherd $(ASAN_BUILD)/tetherd --seconds $(SOAK_SECONDS) \
		--progress $(SOAK_ARGS)

integration: all
	$(PYTHON) -m pytest -q tests/integration

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

format-check:
	clang-format --dry-run --Werror $$(git ls-files '*.c' '*.h')

demo: all
	$(PYTHON) scripts/demo.py

bench: setup $(BENCH_BUILD)/build.ninja
	ninja -C $(BENCH_BUILD)
	$(PYTHON) bench/run.py --tetherd $(BENCH_BUILD)/tetherd $(BENCH_ARGS)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(BENCH_BUILD)
