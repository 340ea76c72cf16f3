#!/usr/bin/python3
"""Fails when an include in src/ points up the layers or closes a cycle.

The layers, lowest first (docs/internals/layout.md):

    core <- event, http, config <- net, health <- upstream <- metrics <- proxy <- cli, churn <- cmd

A file may include a header of its own directory or of a lower layer, never one of a higher layer
nor of another directory on the same layer (event and http know nothing of each other). A
directory that is not listed here fails too, so a new one is placed on purpose. Within a directory
headers must not include each other in a circle. Run by scripts/run_tests.py as a gate; prints
every violation and exits 1 if there is one.
"""

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "src")

LAYERS = {
    "core": 0,
    "event": 1,
    "http": 1,
    "config": 1,
    "net": 2,
    "health": 2,
    "upstream": 3,
    "metrics": 4,
    "proxy": 5,
    "cli": 6,
    "churn": 6,
    "cmd": 7,
}

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def includes(path):
    with open(path, encoding="utf-8") as fh:
        return INCLUDE.findall(fh.read())


def source_files(src):
    for dirpath, _, names in os.walk(src):
        for name in sorted(names):
            if name.endswith((".c", ".h")):
                full = os.path.join(dirpath, name)
                yield os.path.relpath(full, src).replace(os.sep, "/")


def check(src=SRC, layers=LAYERS):
    """Returns the list of violations, as human-readable lines."""
    problems = []
    graph = {}
    for rel in source_files(src):
        here = rel.split("/")[0]
        if here not in layers:
            problems.append("%s: directory %s/ has no layer (tests/check_layers.py)" % (rel, here))
            continue
        graph[rel] = []
        for inc in includes(os.path.join(src, rel)):
            there = inc.split("/")[0]
            if not os.path.exists(os.path.join(src, inc)):
                continue  # not ours (llhttp.h)
            graph[rel].append(inc)
            if there == here:
                continue
            if there not in layers:
                problems.append("%s: includes %s from a directory with no layer" % (rel, inc))
            elif layers[there] >= layers[here]:
                kind = "a higher" if layers[there] > layers[here] else "the same"
                problems.append("%s: includes %s from %s layer (%s is %d, %s is %d)"
                                % (rel, inc, kind, here, layers[here], there, layers[there]))
    problems.extend(cycles(graph))
    return problems


def cycles(graph):
    """Include cycles among files, each reported once as a -> b -> ... -> a."""
    found, state, stack = [], {}, []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                loop = stack[stack.index(nxt):] + [nxt]
                found.append("include cycle: " + " -> ".join(loop))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def main():
    problems = check()
    for p in problems:
        print("check_layers: " + p)
    if not problems:
        print("check_layers: %d files, includes only downward, no cycles"
              % sum(1 for _ in source_files(SRC)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
