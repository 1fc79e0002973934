"""``python -m trm_lib bench``: ``bench all`` writes every benchmark's output under a machine
line; ``bench train`` prints a cached and a live epoch time and their ratio."""

from __future__ import annotations

import re

import pytest
import torch

from trm_lib.tools import bench
from trm_lib.utils.errors import ConfigError

TINY = {"synth": ["--size", "64", "--n", "3"],
        "train": ["--images", "8", "--batch", "4", "--classes", "5", "--jpeg-size", "96x64"]}


def test_bench_all_writes_the_file_with_a_machine_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "ALL_ARGS", TINY)
    out = tmp_path / "BENCHMARKS.md"
    assert bench.cli(["all", "--out", str(out), "--only", "synth,train"]) == 0
    text = out.read_text()
    machine = next(line for line in text.splitlines() if line.startswith("Machine: "))
    assert f"torch {torch.__version__}" in machine and " cores (" in machine
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", machine)
    assert "## synth" in text and "`python -m trm_lib bench synth --size 64 --n 3`" in text
    assert "## features" not in text
    # the train section carries both epoch times and their ratio, consistent with each other
    live = float(re.search(r"live-backbone epoch\s+([\d.]+) s", text).group(1))
    cached = float(re.search(r"cached-feature epoch\s+([\d.]+) s", text).group(1))
    ratio = float(re.search(r"live / cached epoch time: ([\d.]+)x", text).group(1))
    assert ratio == pytest.approx(live / cached, rel=0.1, abs=0.1)
    assert "wrote" in capsys.readouterr().out


def test_bench_all_names_an_unknown_benchmark(tmp_path):
    with pytest.raises(ConfigError, match="nosuch"):
        bench.cli(["all", "--out", str(tmp_path / "b.md"), "--only", "nosuch"])
