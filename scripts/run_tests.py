#!/usr/bin/python3
"""Runs every check behind `make test` and ends with the line `N passed, N failed`.

Steps: formatting (clang-format), the include layers (tests/check_layers.py), the
warnings-as-errors build, unit tests, the integration suite (pytest, real processes on loopback),
then a clang build with AddressSanitizer and UndefinedBehaviorSanitizer running the unit tests and
the integration suite again (all but the deliberately slow tests), and last the libFuzzer
harnesses (tests/fuzz, built in build-fuzz): each replays its saved regression inputs and fuzzes
for FUZZ_SMOKE_SECONDS (10); between the two, a 60-second soak with injected faults
against the sanitizer build (tests/soak/soak.py). Each unit test binary, each pytest test, each fuzz replay and run,
and each gate (format, layers, build) counts once. A failing step does not stop the later ones,
so one run shows everything that is wrong.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = "/usr/bin/python3"
FUZZ_SMOKE_SECONDS = 10

sys.path.insert(0, os.path.join(ROOT, "scripts"))
import fuzz  # noqa: E402  (scripts/fuzz.py)


class Tally:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.skipped = 0
        self.failures = []

    def record(self, name, ok):
        if ok:
            self.passed += 1
        else:
            self.failed += 1
            self.failures.append(name)


def run(cmd, **kwargs):
    print("+ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT, **kwargs)


def tracked_c_files():
    out = subprocess.run(["git", "ls-files", "*.c", "*.h"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    return [f for f in out.split() if os.path.exists(os.path.join(ROOT, f))]


def check_format(tally):
    files = tracked_c_files()
    result = run(["clang-format", "--dry-run", "--Werror"] + files)
    tally.record("format (clang-format)", result.returncode == 0)


def check_layers(tally):
    result = run([PYTHON, "tests/check_layers.py"])
    tally.record("layers (tests/check_layers.py)", result.returncode == 0)


def build(tally, builddir, setup_args, env=None, label="build"):
    if not os.path.exists(os.path.join(ROOT, builddir, "build.ninja")):
        if run(["meson", "setup", builddir] + setup_args, env=env).returncode != 0:
            tally.record(label, False)
            return False
    ok = run(["ninja", "-C", builddir], env=env).returncode == 0
    tally.record(label, ok)
    return ok


def unit_tests(tally, builddir, label):
    """Runs meson's unit tests and records each one by name."""
    result = run(["meson", "test", "-C", builddir, "--print-errorlogs", "--no-rebuild"])
    log = os.path.join(ROOT, builddir, "meson-logs", "testlog.json")
    if not os.path.exists(log):
        tally.record(label + ": meson test", False)
        return

    seen = 0
    with open(log) as fh:
        for line in fh:
            entry = json.loads(line)
            seen += 1
            tally.record("%s: %s" % (label, entry["name"]), entry["result"] == "OK")
    if seen == 0 or (result.returncode != 0 and not tally.failures):
        tally.record(label + ": meson test", False)


def integration_tests(tally, tetherd, label="integration", extra=(), env_extra=None):
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "junit.xml")
        env = dict(os.environ, TETHERD=tetherd, **(env_extra or {}))
        run([PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--junitxml", report]
            + list(extra) + ["tests/integration"], env=env)
        if not os.path.exists(report):
            tally.record(label + ": pytest did not run", False)
            return
        for case in ET.parse(report).getroot().iter("testcase"):
            name = "%s: %s::%s" % (label, case.get("classname"), case.get("name"))
            if case.find("skipped") is not None:
                tally.skipped += 1
                continue
            failed = case.find("failure") is not None or case.find("error") is not None
            tally.record(name, not failed)


def soak(tally):
    """The soak of `make soak`, for 60 s (tests/soak/soak.py): mixed traffic, faults and bad
    input against the sanitizer build; one test. Its results stay in build-asan/soak-60s/."""
    out = os.path.join(ROOT, "build-asan", "soak-60s")
    result = run([PYTHON, "tests/soak/soak.py", "--tetherd",
                  os.path.join(ROOT, "build-asan", "tetherd"), "--seconds", "60", "--warmup",
                  "20", "--out", out])
    tally.record("soak (60 s, ASan+UBSan tetherd, faults injected)", result.returncode == 0)


def fuzz_checks(tally):
    """Replays every harness's regression inputs, then fuzzes each briefly from its seeds (a
    scratch working corpus; a crash is saved under tests/fuzz/regressions like `make fuzz`)."""
    print("+ scripts/fuzz.py (build)", flush=True)
    if not fuzz.build():
        tally.record("build (clang, libFuzzer)", False)
        return
    tally.record("build (clang, libFuzzer)", True)
    for name in fuzz.HARNESSES:
        ok, count, out = fuzz.replay(name)
        print(f"fuzz {name}: {count} regression inputs: {'ok' if ok else 'FAILED'}", flush=True)
        if not ok:
            print(out[-4000:])
        tally.record(f"fuzz: {name} regressions", ok)
        with tempfile.TemporaryDirectory() as work:
            r = fuzz.fuzz(name, FUZZ_SMOKE_SECONDS, workdir=work)
        print(f"fuzz {name}: {r['execs']} executions in {r['seconds']}s, cov {r['cov']} "
              f"ft {r['ft']}{', CRASH ' + ' '.join(r['artifacts']) if r['crashed'] else ''}",
              flush=True)
        if r["crashed"]:
            print(r["tail"])
        tally.record(f"fuzz: {name} {FUZZ_SMOKE_SECONDS}s", not r["crashed"])


def main():
    started = time.monotonic()
    tally = Tally()
    check_format(tally)
    check_layers(tally)
    if build(tally, "build", [], label="build (-Wall -Wextra -Werror)"):
        unit_tests(tally, "build", "unit")
        integration_tests(tally, os.path.join(ROOT, "build", "tetherd"))
    sanitizer_env = dict(os.environ, CC="clang")
    if build(tally, "build-asan", ["-Db_sanitize=address,undefined", "-Db_lundef=false",
                                   "-Dbuildtype=debug"], env=sanitizer_env,
             label="build (clang, ASan+UBSan)"):
        os.environ["UBSAN_OPTIONS"] = "halt_on_error=1:print_stacktrace=1"
        os.environ["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=1"
        unit_tests(tally, "build-asan", "unit (ASan+UBSan)")
        # The request path itself under the sanitizers: tetherd must exit 0 at every teardown,
        # so a leak report (exit status 23) or any sanitizer error fails the test that caused it.
        integration_tests(tally, os.path.join(ROOT, "build-asan", "tetherd"),
                          "integration (ASan+UBSan)", ["-m", "not slow"],
                          {"ASAN_OPTIONS": "detect_leaks=1:exitcode=23"})
        soak(tally)


    fuzz_checks(tally)
    print()
    print("took %.0fs" % (time.monotonic() - started))
    for name in tally.failures:
        print("FAILED: " + name)
    summary = "%d passed, %d failed" % (tally.passed, tally.failed)
    if tally.skipped:
        summary += ", %d skipped" % tally.skipped
    print(summary)
    return 1 if tally.failed else 0


if __name__ == "__main__":
    sys.exit(main())
