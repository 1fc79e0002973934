"""Reliability of what a run and a grid write: concurrent writers of one results CSV, run-folder
locks, damaged checkpoints, nothing created before validation, a full run folder.

The feature-store and file-level faults are in ``test_reliability.py``; this module runs real
processes where a fault needs two of them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import fixture_writers as fx
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import trm_lib.train as T
from trm_lib.config.run_config import ConfigError, RunConfig
from trm_lib.datasets import DatasetError
from trm_lib.experiments.table import merge_results
from trm_lib.utils.errors import DiskFullError, FileError, TrainingError

REPO = Path(__file__).resolve().parents[1]
TINY = fx.TINY_RUN


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


# ---------------------------------------------------------------------------------------------
# Run folders: one writer, damaged files, nothing before validation, a full disk
# ---------------------------------------------------------------------------------------------

def _cfg(world, **overrides) -> RunConfig:
    return RunConfig().with_overrides({**TINY, "data.root": str(world), **overrides})


@pytest.fixture(scope="module")
def finished(world, tmp_path_factory):
    """A finished tiny run (2 epochs) to damage copies of."""
    out = tmp_path_factory.mktemp("finished") / "run"
    T.train(_cfg(world, **{"train.epochs": 2}), out, log=None)
    return out


def _copy(finished: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    return out


def test_a_second_writer_of_a_run_folder_waits_for_the_first(world, tmp_path):
    """Another process holds the run folder's lock (as a training does) until told to let go:
    train() says in one line that it waits, and writes nothing into the folder before the
    lock is released."""
    out = tmp_path / "run"
    out.mkdir()
    go, released = tmp_path / "go", tmp_path / "released"
    hold = ("import sys, time\nfrom pathlib import Path\nfrom trm_lib.utils.locks import file_lock\n"
            "from trm_lib.train.runs import run_lock_path\n"
            "with file_lock(run_lock_path(Path(sys.argv[1]))):\n"
            "    print('held', flush=True)\n"
            "    for _ in range(600):\n"
            "        if Path(sys.argv[2]).exists():\n            break\n"
            "        time.sleep(0.1)\n"
            "    Path(sys.argv[3]).write_text(repr(time.time()))\n")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(out), str(go), str(released)],
                              env=_env(), text=True, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == "held"
        lines: list[str] = []

        def log(line: str) -> None:
            lines.append(line)
            if "waiting for it" in line:
                go.touch()

        result = T.train(_cfg(world), out, log=log)
        assert holder.wait(timeout=60) == 0
    finally:
        holder.kill()
    assert f"{out}: another process is training in this run folder; waiting for it" in lines
    assert released.exists(), "train() did not wait for the lock"
    assert (out / "config.yaml").stat().st_mtime >= float(released.read_text()) - 0.05
    assert result.complete and T.load_result(out).metrics == result.metrics


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "random":
        path.write_bytes(np.random.default_rng(0).bytes(len(data)))
    else:  # a valid torch file that is not a checkpoint
        torch.save(torch.zeros(3), path)


HOW = ["empty", "truncated", "random", "foreign"]


@pytest.mark.parametrize("how", HOW)
def test_a_damaged_last_pt_names_the_file_when_resuming(world, finished, tmp_path, how):
    out = _copy(finished, tmp_path)
    (out / "result.json").unlink()  # unfinished: the resume reads last.pt
    _damage(out / "last.pt", how)
    with pytest.raises(FileError, match=rf"^{out / 'last.pt'}: .*delete it to restart"):
        T.train(_cfg(world, **{"train.epochs": 2}), out, log=None)


@pytest.mark.parametrize("how", HOW)
def test_a_damaged_best_pt_names_the_file_on_load(finished, tmp_path, how):
    out = _copy(finished, tmp_path)
    _damage(out / "best.pt", how)
    with pytest.raises(FileError, match=rf"^{out / 'best.pt'}: .*retrain the run"):
        T.load_run(out)


def test_a_finished_run_returns_its_result_without_reading_last_pt(world, finished, tmp_path,
                                                                  monkeypatch):
    out = _copy(finished, tmp_path)
    _damage(out / "last.pt", "random")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("a checkpoint was read"))
    result = T.train(_cfg(world, **{"train.epochs": 2}), out, log=None)
    assert result.complete and result.metrics == T.load_result(finished).metrics


def test_the_cli_reports_a_damaged_checkpoint_in_one_line(finished, tmp_path):
    """End to end: ``python -m trm_lib evaluate`` on a run whose best.pt is truncated prints
    one ``error:`` line naming the file and exits 2."""
    out = _copy(finished, tmp_path)
    _damage(out / "best.pt", "truncated")
    proc = _trm("evaluate", "--run", str(out))
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 2, stderr
    assert stderr.strip().splitlines() == [stderr.strip()]
    assert stderr.startswith(f"error: {out / 'best.pt'}: damaged or not a checkpoint")


class _Crafted:
    """A pickle that would create ``path`` when unpickled without ``weights_only``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


@pytest.mark.parametrize("name", ["last.pt", "best.pt"])
def test_a_crafted_pickle_checkpoint_is_refused_naming_the_file_never_run(world, finished,
                                                                         tmp_path, name):
    out = _copy(finished, tmp_path)
    marker = tmp_path / "executed"
    torch.save({"config": {}, "method": _Crafted(marker), "epoch": 1}, out / name)
    with pytest.raises(FileError, match=rf"^{out / name}: "):
        if name == "last.pt":
            (out / "result.json").unlink()
            T.train(_cfg(world, **{"train.epochs": 2}), out, log=None)
        else:
            T.load_run(out)
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"{\"config\": 1", b"{\"config\": {}}"])
def test_a_damaged_result_json_names_the_file(world, finished, tmp_path, content):
    out = _copy(finished, tmp_path)
    (out / "result.json").write_bytes(content)
    with pytest.raises((FileError, TrainingError), match=str(out)):
        T.train(_cfg(world, **{"train.epochs": 2}), out, log=None)


@pytest.mark.parametrize("bad", [{"data.dataset": "no_such_dataset"},
                                 {"data.root": "/no/such/folder"}])
def test_nothing_is_created_before_the_dataset_is_valid(world, tmp_path, bad):
    out = tmp_path / "runs" / "run"
    with pytest.raises((ConfigError, DatasetError, FileNotFoundError)):
        T.train(_cfg(world, **bad), out, log=None)
    assert not (tmp_path / "runs").exists()


def test_a_full_run_folder_is_one_line_naming_it(world, tmp_path, monkeypatch):
    """Simulated: torch.save fails the way it does on a full disk (a RuntimeError that names
    nothing); the trainer reports ``no space left on <run folder>``."""
    out = tmp_path / "run"

    def full(obj, f, *a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(DiskFullError, match=rf"^no space left on {out} \(writing {out}/best.pt"):
        T.train(_cfg(world), out, log=None)
    assert not [p.name for p in out.iterdir() if p.name.endswith(".pt") or ".tmp" in p.name]


def test_a_tiny_tmpfs_run_folder_fills_up_cleanly(world, tmp_path):
    """The real thing where the sandbox can mount: a 16 KiB tmpfs holds config.yaml but not the
    checkpoints."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mnt)],
            capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (the simulated test covers this)")
    try:
        with pytest.raises(DiskFullError, match=rf"^no space left on {mnt / 'run'}"):
            T.train(_cfg(world, **{"method.name": "trm_ml"}), mnt / "run", log=None)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


@pytest.mark.parametrize("dataset", ["folder", "synthscenes"])
def test_training_on_an_empty_read_only_cache_is_one_error_naming_trm_cache(world, tmp_path,
                                                                           monkeypatch, dataset):
    """The first write into the cache (a label mask, a generated world) names TRM_CACHE
    instead of a raw OSError."""
    from test_reliability import read_only_view

    empty = tmp_path / "empty-cache"
    empty.mkdir()
    cfg = _cfg(world) if dataset == "folder" else \
        _cfg(world, **{"data.dataset": "synthscenes", "data.root": None})
    with read_only_view(empty) as (view, how):
        monkeypatch.setenv("TRM_CACHE", str(view))
        with pytest.raises((FileError, DatasetError)) as err:
            T.train(cfg, tmp_path / "run", log=None)
    msg = str(err.value)
    assert "\n" not in msg and f"set TRM_CACHE to a writable folder (now {view})" in msg, how
    assert not (tmp_path / "run").exists()


def test_the_reliability_table_names_only_tests_that_exist():
    """docs/RELIABILITY.md proves each row with a test: every name it cites is a test function."""
    import re

    text = (REPO / "docs" / "RELIABILITY.md").read_text()
    cited = set(re.findall(r"\b(test_\w+)\b(?!\.py)", text))
    defined = {m for p in (REPO / "tests").glob("test_*.py")
               for m in re.findall(r"^def (test_\w+)", p.read_text(), flags=re.M)}
    assert len(cited) >= 25 and not cited - defined, sorted(cited - defined)


@pytest.mark.parametrize("how", ["empty", "truncated", "random"])
def test_damaged_backbone_weights_name_the_file(tmp_path, how):
    """A damaged ``local-dir:`` folder (the cached TinyCLIP's form) or weights file is a
    BackboneError naming it (was safetensors' / torch's header error naming nothing)."""
    import open_clip

    from trm_lib.backbone.clip import BackboneError, FrozenCLIP
    from trm_lib.tinyclip.pretrain import WEIGHTS_FILE, _save_folder

    FrozenCLIP("TinyCLIP-RN", None, 64)  # registers the model config with open_clip
    state = {k: v.contiguous()
             for k, v in open_clip.create_model("TinyCLIP-RN").state_dict().items()}
    folder = tmp_path / "weights"
    folder.mkdir()
    _save_folder(folder, open_clip.get_model_config("TinyCLIP-RN"), state, (0.5, 0.5, 0.5),
                 (0.5, 0.5, 0.5))
    FrozenCLIP(f"local-dir:{folder}", None, 64)  # the intact folder loads
    _damage(folder / WEIGHTS_FILE, how)
    with pytest.raises(BackboneError, match=rf"^{folder}: cannot load the weights .*damaged"):
        FrozenCLIP(f"local-dir:{folder}", None, 64)
    file = tmp_path / "weights.pt"
    torch.save(state, file)
    _damage(file, how)
    with pytest.raises(BackboneError, match=rf"^{file}: cannot load the weights"):
        FrozenCLIP("TinyCLIP-RN", str(file), 64)
