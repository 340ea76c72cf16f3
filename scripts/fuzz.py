#!/usr/bin/python3
"""Runs tether's libFuzzer harnesses (tests/fuzz) and reports executions, coverage and crashes.

    scripts/fuzz.py [--seconds N] [--jobs N] [--harness NAME ...] [--replay]

Builds build-fuzz/ (clang, -Dfuzz=true, ASan+UBSan) first. Each harness fuzzes for --seconds
(default $FUZZ_SECONDS or 600) from its seed corpus (tests/fuzz/corpus/NAME, read only) and its
working corpus (build-fuzz/corpus/NAME, kept between runs, so longer runs build on earlier ones),
with its dictionary (tests/fuzz/NAME.dict). A crash, leak or timeout input is saved as
tests/fuzz/regressions/NAME/crash-<sha1> (leak-, timeout-, oom-): commit it, fix the bug, and
`make test` replays it from then on. --replay only replays the regression inputs. --jobs runs that
many harnesses at once. Exit status 1 if anything crashed.
"""

import argparse
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "build-fuzz")
FUZZ_DIR = os.path.join(ROOT, "tests", "fuzz")
HARNESSES = ["request_head", "response_head", "body", "config", "admin", "tracefs", "sockdiag"]
SETUP = ["meson", "setup", BUILD, "-Dfuzz=true", "-Dtests=false", "-Db_sanitize=address,undefined",
         "-Db_lundef=false", "-Dbuildtype=debugoptimized"]
ENV = dict(os.environ, CC="clang",
           ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:allocator_may_return_null=1",
           UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1")


def build():
    """Configures (once) and builds build-fuzz; returns True on success."""
    if not os.path.exists(os.path.join(BUILD, "build.ninja")):
        if subprocess.run(SETUP, cwd=ROOT, env=ENV).returncode != 0:
            return False
    return subprocess.run(["ninja", "-C", BUILD], cwd=ROOT, env=ENV).returncode == 0


def binary(name):
    return os.path.join(BUILD, "tests", "fuzz", "fuzz_" + name)


def regression_inputs(name):
    folder = os.path.join(FUZZ_DIR, "regressions", name)
    if not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if not f.startswith("."))


def replay(name):
    """Runs the harness once over every saved regression input. Returns (ok, count, output)."""
    inputs = regression_inputs(name)
    if not inputs:
        return True, 0, ""
    result = subprocess.run([binary(name), "-runs=1"] + inputs, cwd=ROOT, env=ENV,
                            capture_output=True, text=True, errors="replace")
    return result.returncode == 0, len(inputs), result.stderr


def fuzz(name, seconds, workdir=None, artifacts=None):
    """Fuzzes one harness for `seconds`. Returns a dict: execs, cov, ft, corpus, crashed,
    artifacts (new files), output tail."""
    workdir = workdir or os.path.join(BUILD, "corpus", name)
    artifacts = artifacts or os.path.join(FUZZ_DIR, "regressions", name)
    os.makedirs(workdir, exist_ok=True)
    os.makedirs(artifacts, exist_ok=True)
    before = set(os.listdir(artifacts))
    cmd = [binary(name), f"-max_total_time={seconds}", "-print_final_stats=1", "-timeout=10",
           "-rss_limit_mb=2048", "-max_len=16384", f"-artifact_prefix={artifacts}/", workdir,
           os.path.join(FUZZ_DIR, "corpus", name)]
    dictionary = os.path.join(FUZZ_DIR, name + ".dict")
    if os.path.exists(dictionary):
        cmd.insert(1, f"-dict={dictionary}")
    started = time.monotonic()
    result = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True,
                            errors="replace")
    out = result.stderr
    stats = {"name": name, "seconds": round(time.monotonic() - started), "execs": 0, "cov": 0,
             "ft": 0, "corpus": 0}
    for line in out.splitlines():
        m = re.match(r"#(\d+)\s+\S+\s+cov: (\d+) ft: (\d+) corp: (\d+)", line)
        if m:
            stats.update(cov=int(m[2]), ft=int(m[3]), corpus=int(m[4]))
        m = re.match(r"stat::number_of_executed_units: (\d+)", line)
        if m:
            stats["execs"] = int(m[1])
    stats["artifacts"] = sorted(set(os.listdir(artifacts)) - before)
    stats["crashed"] = result.returncode != 0 or bool(stats["artifacts"])
    stats["tail"] = "\n".join(out.splitlines()[-40:])
    return stats


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("FUZZ_SECONDS", 600)))
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--harness", action="append", choices=HARNESSES)
    parser.add_argument("--replay", action="store_true")
    args = parser.parse_args(argv)
    names = args.harness or HARNESSES
    if not build():
        print("fuzz: build failed", file=sys.stderr)
        return 1
    failed = False
    for name in names:
        ok, count, out = replay(name)
        print(f"{name}: {count} regression inputs replayed: {'ok' if ok else 'FAILED'}")
        if not ok:
            print(out[-4000:])
            failed = True
    if args.replay:
        return 1 if failed else 0
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(lambda n: fuzz(n, args.seconds), names))
    print()
    print(f"{'harness':<15} {'seconds':>7} {'executions':>12} {'exec/s':>8} {'cov':>6} "
          f"{'ft':>7} {'corpus':>7}  crashes")
    for r in results:
        rate = r["execs"] // max(1, r["seconds"])
        print(f"{r['name']:<15} {r['seconds']:>7} {r['execs']:>12,} {rate:>8,} {r['cov']:>6} "
              f"{r['ft']:>7} {r['corpus']:>7}  {', '.join(r['artifacts']) or '-'}")
        if r["crashed"]:
            failed = True
            print(r["tail"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
