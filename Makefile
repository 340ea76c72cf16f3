# tether: `make` builds, `make test` runs every check, `make demo` shows the effect,
# `make bench` compares with direct connections, HAProxy, nginx and H2O.
# Each target installs the Debian packages it needs first (scripts/setup.sh).

BUILD       ?= build
ASAN_BUILD  ?= build-asan
BENCH_BUILD ?= build-release
PYTHON      ?= /usr/bin/python3
MESON_OPTS  ?=
PREFIX      ?= /usr/local
DESTDIR     ?=

.PHONY: all setup test unit unit-asan integration format format-check demo bench prove clean install

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

unit-asan: setup $(ASAN_BUILD)/build.ninja
	ninja -C $(ASAN_BUILD)
	meson test -C $(ASAN_BUILD) --print-errorlogs

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
	rm -rf $(BUILD) $(ASAN_BUILD) $(BENCH_BUILD)
