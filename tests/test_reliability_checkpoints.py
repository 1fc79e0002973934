"""Checkpoint identity (issue 29): a checkpoint is used only by the run it belongs to.

``evaluate`` on a ``best.pt`` copied from another run, a checkpoint of another class list, NaN
weights or a non-integer ``epoch`` are each one error naming the file
(:func:`trm_lib.train.runs.check_identity` and ``load_checkpoint``'s field checks), never
another dataset's number printed as this run's, nor a traceback.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import fixture_writers as fx
import pytest
import torch

import trm_lib.train as T
from trm_lib.config.run_config import RunConfig
from trm_lib.utils.errors import FileError, TrainingError

REPO = Path(__file__).resolve().parents[1]
TINY = fx.TINY_RUN


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two finished tiny runs of different configs (lr) on one world, in a private cache."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRM_CACHE", str(cache))
        world = fx.write_square_world(tmp_path_factory.mktemp("world"), 32, 16, 0)
        base = tmp_path_factory.mktemp("runs")
        out = {}
        for name, lr in (("a", 0.01), ("b", 0.02)):
            cfg = RunConfig().with_overrides({**TINY, "data.root": str(world), "train.lr": lr})
            out[name] = T.train(cfg, base / name, log=None).out_dir
        yield world, out, cache


def _copy(src: Path, tmp_path: Path, name: str = "run") -> Path:
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


def _edit(path: Path, **changes) -> None:
    ckpt = torch.load(path, weights_only=True)
    for key, value in changes.items():
        if value is None:
            ckpt.pop(key, None)
        else:
            ckpt[key] = value
    torch.save(ckpt, path)


def _env(cache: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "TRM_CACHE": str(cache), "HF_HUB_OFFLINE": "1",
            "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", "TRM_DEBUG": ""}


def test_evaluate_on_a_best_pt_of_another_run_is_one_error_line(runs, tmp_path):
    """A best.pt copied from run b (another lr) into run a: the CLI used to print b's numbers
    as a's; now one line naming the file and the differing field, exit 2."""
    _, out, cache = runs
    run = _copy(out["a"], tmp_path)
    shutil.copy(out["b"] / "best.pt", run / "best.pt")
    proc = subprocess.run([sys.executable, "-m", "trm_lib", "evaluate", "--run", str(run)],
                          capture_output=True, text=True, env=_env(cache), timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: {run / 'best.pt'}: the checkpoint belongs to another "
                               f"run") and "train.lr: 0.02 (checkpoint) != 0.01" in lines[0]


def test_a_checkpoint_of_other_classes_is_refused_naming_the_file(runs, tmp_path):
    """The world's class list changed under a finished run (one class renamed): load_run
    refuses best.pt naming both class counts instead of scoring renamed classes."""
    world, out, _ = runs
    moved = tmp_path / "world"
    shutil.copytree(world, moved)
    names = (moved / "classes.txt").read_text().split()
    renamed = ["crimson", *names[1:]]
    (moved / "classes.txt").write_text("\n".join(renamed) + "\n")
    for split in ("train", "test"):
        file = moved / "annotations" / f"{split}.csv"
        rows = list(csv.reader(file.open()))
        rows[0] = ["image", *renamed]
        with file.open("w", newline="") as fh:
            csv.writer(fh).writerows(rows)
    run = _copy(out["a"], tmp_path)
    (run / "config.yaml").unlink()  # the recorded config names the old root
    _edit(run / "best.pt", config={**torch.load(run / "best.pt", weights_only=True)["config"],
                                   "data": {**torch.load(run / "best.pt", weights_only=True)[
                                       "config"]["data"], "root": str(moved)}})
    with pytest.raises(TrainingError, match=r"best.pt: trained on 4 classes, the dataset now "
                                            r"has 4 \(differing: crimson, red\)"):
        T.load_run(run)


def test_a_checkpoint_of_another_class_count_is_one_error_not_a_size_mismatch(runs, tmp_path):
    """A checkpoint without the recorded class list (older runs) whose head has another shape
    (a 5-class checkpoint in a 20-class run): one TrainingError naming the file, not torch's
    'size mismatch' RuntimeError."""
    _, out, _ = runs
    run = _copy(out["a"], tmp_path)
    ckpt = torch.load(run / "best.pt", weights_only=True)
    state = {k: torch.cat([v, v[:1]]) if v.ndim and v.shape[0] == 4 else v
             for k, v in ckpt["method"].items()}  # the head of a 5-class run
    assert any(v.shape != ckpt["method"][k].shape for k, v in state.items())
    _edit(run / "best.pt", method=state, classes=None)
    with pytest.raises(TrainingError, match=r"best.pt: checkpoint does not fit method "
                                            r"'linear_probe' of this run \(size mismatch"):
        T.load_run(run)


@pytest.mark.parametrize(("change", "fragment"), [
    ({"epoch": "abc"}, "field 'epoch' must be a whole number >= 0, got 'abc'"),
    ({"epoch": -1}, "field 'epoch' must be a whole number >= 0, got -1"),
    ({"config": [1, 2]}, "field 'config' is not a mapping"),
    ({"method": {"w": "x"}}, "field 'method' is not a state dict of tensors"),
    ("nan", "non-finite (NaN/inf) weights in "),
], ids=["epoch-abc", "epoch-negative", "config-list", "method-str", "nan-weights"])
@pytest.mark.parametrize("which", ["best.pt", "last.pt"])
def test_checkpoint_fields_are_checked_naming_the_file(runs, tmp_path, change, fragment, which):
    world, out, _ = runs
    run = _copy(out["a"], tmp_path)
    if change == "nan":
        state = torch.load(run / which, weights_only=True)["method"]
        key = next(k for k, v in state.items() if v.is_floating_point())
        state[key] = torch.full_like(state[key], float("nan"))
        change = {"method": state}
    _edit(run / which, **change)
    with pytest.raises(FileError) as err:
        if which == "best.pt":
            T.load_run(run)
        else:
            (run / "result.json").unlink()
            cfg = RunConfig().with_overrides({**TINY, "data.root": str(world)})
            T.train(cfg, run, log=None)
    assert str(err.value).startswith(f"{run / which}: {fragment}"), err.value


def test_the_right_checkpoint_still_loads(runs):
    """The checks refuse only what is wrong: the run's own best.pt evaluates to its result."""
    _, out, _ = runs
    loaded = T.load_run(out["a"])
    assert loaded.evaluate("test")["mAP"] == pytest.approx(
        loaded.result.metrics["test"]["mAP"], abs=1e-6)


def test_a_damaged_config_yaml_is_named_and_a_missing_one_is_not_needed(runs, tmp_path):
    """evaluate compares best.pt with the run folder's config.yaml: a damaged one is an error
    naming it; a run folder without one (copied checkpoints) still loads."""
    from trm_lib.config.run_config import ConfigError

    _, out, _ = runs
    run = _copy(out["a"], tmp_path)
    (run / "config.yaml").write_text("train: {epochs: [1\n")
    with pytest.raises(ConfigError, match=rf"^{run / 'config.yaml'}: not valid YAML"):
        T.load_run(run)
    (run / "config.yaml").unlink()
    assert T.load_run(run).epoch == 1
