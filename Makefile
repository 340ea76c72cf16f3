# tether: `make` builds, `make test` runs every check, `make demo` shows the effect,
# `make bench` compares with direct connections, HAProxy, nginx and H2O, `make fuzz` runs the
# libFuzzer harnesses (FUZZ_SECONDS each, default 600; FUZZ_ARGS="--jobs 2" for more at once).
# `make soak` runs traffic with faults against the sanitizer build (SOAK_SECONDS, default 900).
# Each target installs the Debian packages it needs first (scripts/setup.sh).

BUILD       ?= build
ASAN_BUILD  ?= build-asan
BENCH_BUILD ?= build-release
FUZZ_SECONDS ?= 600
PYTHON      ?= /usr/bin/python3
MESON_OPTS  ?=
SOAK_SECONDS ?= 900
PREFIX      ?= /usr/local
DESTDIR     ?=

.PHONY: all setup test unit asan unit-asan soak integration format format-check demo bench prove fuzz clean install

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

fuzz: setup
	$(PYTHON) scripts/fuzz.py --seconds $(FUZZ_SECONDS) $(FUZZ_ARGS)

# The optimised build, installed under $(DESTDIR)$(PREFIX): bin/tetherd, bin/tether, the man
# pages tetherd(8), tether(1), tether.ini(5), and the example configuration and systemd unit
# under share/doc/tether.
install: setup $(BENCH_BUILD)/build.ninja
	meson configure $(BENCH_BUILD) --prefix=$(PREFIX)
	ninja -C $(BENCH_BUILD)
	DESTDIR=$(DESTDIR) meson install -C $(BENCH_BUILD) --no-rebuild --quiet

# The mission's scenario on two hosts (network namespaces): about 4 minutes, see docs/prove.md.
prove: setup $(BENCH_BUILD)/build.ninja
	ninja -C $(BENCH_BUILD)
	$(PYTHON) bench/prove.py --tetherd $(BENCH_BUILD)/tetherd $(PROVE_ARGS)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(BENCH_BUILD) build-fuzz
