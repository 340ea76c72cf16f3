"""The include-layer gate (tests/check_layers.py) holds for src/ and catches what it is for."""

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("check_layers", REPO / "tests" / "check_layers.py")
check_layers = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_layers)


def write(root, rel, text):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_source_tree_includes_only_downward():
    assert check_layers.check() == []


def test_upward_include_is_reported(tmp_path):
    write(tmp_path, "core/a.h", '#include "upstream/b.h"\n')
    write(tmp_path, "upstream/b.h", "\n")
    problems = check_layers.check(str(tmp_path))
    assert len(problems) == 1 and "core/a.h: includes upstream/b.h from a higher layer" in problems[0]


def test_sideways_include_between_directories_of_one_layer_is_reported(tmp_path):
    write(tmp_path, "event/a.h", '#include "http/b.h"\n')
    write(tmp_path, "http/b.h", "\n")
    problems = check_layers.check(str(tmp_path))
    assert len(problems) == 1 and "from the same layer" in problems[0]


def test_cycle_inside_a_directory_is_reported(tmp_path):
    write(tmp_path, "upstream/a.h", '#include "upstream/b.h"\n')
    write(tmp_path, "upstream/b.h", '#include "upstream/a.h"\n')
    write(tmp_path, "upstream/a.c", '#include "upstream/a.h"\n#include "core/x.h"\n')
    write(tmp_path, "core/x.h", "\n")
    problems = check_layers.check(str(tmp_path))
    assert problems == ["include cycle: upstream/a.h -> upstream/b.h -> upstream/a.h"]


def test_directory_without_a_layer_is_reported(tmp_path):
    write(tmp_path, "plugins/probe.c", "\n")
    problems = check_layers.check(str(tmp_path))
    assert len(problems) == 1 and "plugins/ has no layer" in problems[0]
