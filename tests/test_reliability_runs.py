"""Reliability of what a run and a grid write: concurrent writers of one results CSV, run-folder
locks, damaged checkpoints, nothing created before validation, a full run folder.

The feature-store and file-level faults are in ``test_reliability.py``; this module runs real
processes where a fault needs two of them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import fixture_writers as fx
import pandas as pd
import pytest
import yaml

import trm_lib.train as T
from trm_lib.results_table import merge_results

REPO = Path(__file__).resolve().parents[1]
TINY = {"data.dataset": "folder", "data.proportion": 0.5, "data.val_fraction": 0.25,
        "backbone.model": "TinyCLIP-RN", "backbone.pretrained": None,
        "backbone.image_size": 64, "backbone.batch_size": 32, "train.epochs": 1,
        "train.batch_size": 16, "train.lr": 0.01, "train.device": "cpu",
        "train.progress": False, "method.name": "linear_probe"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The tiny square world and a private cache for this module's processes."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRM_CACHE", str(cache))
        yield fx.write_square_world(tmp_path_factory.mktemp("world"), 48, 24, 0)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", "TOKENIZERS_PARALLELISM": "false"}


def _trm(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "trm_lib", *args], env=_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_two_experiment_processes_into_one_csv_keep_every_row(world, tmp_path):
    """Both processes read the (absent) CSV before their first run ends, so a writer that
    rewrote its start-time snapshot would drop the other grid's rows; under the lock with a
    re-read before each write, all 2 x 4 runs are in the CSV with the numbers of their folders."""
    base = {k: v for k, v in TINY.items()}
    base["data.root"] = str(world)
    spec = {"name": "two", "base": base, "grids": {
        "a": {"methods": ["linear_probe"], "proportions": [0.3, 0.7]},
        "b": {"methods": ["linear_probe"], "proportions": [0.3, 0.7],
              "overrides": {"train.lr": 0.02}}}}
    spec_file = tmp_path / "two.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    csv = tmp_path / "shared.csv"
    common = ["experiment", "--spec", str(spec_file), "--seeds", "0,1", "--out", str(csv),
              "--runs-dir", str(tmp_path / "runs"), "--jobs", "1"]
    procs = [_trm(*common, "--grid", g) for g in ("a", "b")]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    df = pd.read_csv(csv)
    runs = df.drop_duplicates(["grid", "proportion", "seed"])
    assert sorted(runs.groupby("grid").size().items()) == [("a", 4), ("b", 4)]
    test_map = df[(df.split == "test") & (df.metric == "mAP")]
    assert len(test_map) == 8
    for _, r in test_map.iterrows():
        assert T.load_result(r["run_dir"]).metrics["test"]["mAP"] == r["value"]


def test_merge_results_keeps_rows_written_by_another_process(tmp_path):
    """The unit under the subprocess test: a write re-reads the CSV, replaces only its own runs."""
    csv = tmp_path / "r.csv"

    def row(grid: str, value: float) -> dict:
        return {"grid": grid, "variant": "default", "config_hash": f"h{grid}", "method": "m",
                "split": "test", "metric": "mAP", "value": value}

    merge_results(csv, [row("a", 0.1)])
    merge_results(csv, [row("b", 0.2)])           # another grid, written in between
    table = merge_results(csv, [row("a", 0.3)])   # grid a re-records its run
    assert sorted(zip(table["grid"], table["value"])) == [("a", 0.3), ("b", 0.2)]
    pd.testing.assert_frame_equal(pd.read_csv(csv), table, check_dtype=False)
