"""The 17 inputs that printed a traceback in issue 29 (item 6): now one ``error:`` line on
stderr naming the field or file, exit status 2. Each runs the command line's ``main`` (the
dispatcher ``python -m trm_lib`` calls) with stderr captured; ``train.epochs=.inf`` and the
decompression bomb also run as real ``python -m trm_lib`` subprocesses. Kept fast: the tiny
square world, a linear probe, one epoch, a module-wide cache."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import fixture_writers as fx
import pytest
import torch
from PIL import Image

import trm_lib.train as T
from trm_lib.__main__ import main
from trm_lib.config.run_config import RunConfig

REPO = Path(__file__).resolve().parents[1]
TINY = fx.TINY_RUN


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The world, a finished tiny run of it, and the environment of the subprocesses."""
    cache = tmp_path_factory.mktemp("cache")
    world = fx.write_square_world(tmp_path_factory.mktemp("world"), 24, 12, 0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRM_CACHE", str(cache))
        run = T.train(RunConfig().with_overrides({**TINY, "data.root": str(world)}),
                      tmp_path_factory.mktemp("runs") / "lp", log=None).out_dir
    environ = {k: v for k, v in os.environ.items() if k != "TRM_DEBUG"}
    environ.update(PYTHONPATH=str(REPO), TRM_CACHE=str(cache), HF_HUB_OFFLINE="1",
                   MPLBACKEND="Agg", OMP_NUM_THREADS="1",
                   TRM_RUNS=str(tmp_path_factory.mktemp("default-runs")))
    return {"world": world, "run": run, "env": environ}


def trm(env: dict, *args: str, real: bool = False) -> subprocess.CompletedProcess[str]:
    """``python -m trm_lib args``: in this process through ``main`` (``real``: a subprocess)."""
    argv = [str(a) for a in args]
    if real:
        return subprocess.run([sys.executable, "-m", "trm_lib", *argv], capture_output=True,
                              text=True, env=env["env"], timeout=300)
    err = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stderr(err), \
            contextlib.redirect_stdout(io.StringIO()):
        for key in ("TRM_CACHE", "TRM_RUNS"):
            mp.setenv(key, env["env"][key])
        mp.delenv("TRM_DEBUG", raising=False)
        code = main(argv)
    return subprocess.CompletedProcess(argv, code, "", err.getvalue())


def tiny(world: Path, *extra: str) -> list[str]:
    sets = {**TINY, "data.root": str(world)}
    for item in extra:
        key, value = item.split("=", 1)
        sets[key] = value
    return [a for k, v in sets.items() for a in ("--set", f"{k}={'null' if v is None else v}")]


def one_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# --------------------------------------------------------------------------- configuration
@pytest.mark.parametrize("value", [".inf", ".nan", "-.inf"])
def test_a_non_finite_epoch_count_is_one_error(env, tmp_path, value):
    proc = trm(env, "train", *tiny(env["world"], f"train.epochs={value}"), "--out",
               tmp_path / "r", real=value == ".inf")
    one_error(proc, "train.epochs must be an integer")
    assert not (tmp_path / "r").exists()


def test_num_heads_that_do_not_divide_the_width_is_one_error(env, tmp_path):
    proc = trm(env, "train", *tiny(env["world"], "method.name=trm_ml", "method.num_heads=3"),
               "--out", tmp_path / "r")
    one_error(proc, "method.num_heads=3 must divide the embedding width")


def test_max_train_one_leaves_no_training_image_is_one_error(env, tmp_path):
    proc = trm(env, "train", *tiny(env["world"], "data.max_train=1"), "--out", tmp_path / "r")
    one_error(proc, "data.val_fraction 0.25 of 1 training image(s) leaves no training image")


# ------------------------------------------------------------------------------- datasets
def _copy_world(env: dict, tmp_path: Path) -> Path:
    world = tmp_path / "world"
    shutil.copytree(env["world"], world)
    return world


def test_a_header_only_label_csv_is_one_error(env, tmp_path):
    world = _copy_world(env, tmp_path)
    ann = world / "annotations" / "train.csv"
    ann.write_text(ann.read_text().splitlines()[0] + "\n")
    proc = trm(env, "train", *tiny(world), "--out", tmp_path / "r")
    one_error(proc, f"{ann}: no image rows")


def test_a_latin1_classes_txt_is_one_error(env, tmp_path):
    world = _copy_world(env, tmp_path)
    (world / "classes.txt").write_bytes("caf\u00e9\ngreen\nblue\nwhite\n".encode("latin-1"))
    proc = trm(env, "train", *tiny(world), "--out", tmp_path / "r")
    one_error(proc, f"{world / 'classes.txt'}: not UTF-8 text (byte 0xe9")


def _bomb_png(path: Path, side: int = 20000) -> None:
    """A small PNG whose header claims side x side pixels (400 megapixels): PIL refuses it as a
    decompression bomb when it opens the file, before decoding anything."""
    Image.new("RGB", (8, 8)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = 8 + 8  # signature, chunk length + type
    data[ihdr:ihdr + 8] = struct.pack(">II", side, side)
    crc = zlib.crc32(bytes(data[ihdr - 4:ihdr + 13]))
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))


def test_a_decompression_bomb_png_is_one_error(env, tmp_path):
    world = _copy_world(env, tmp_path)
    image = world / "train" / "003.png"
    _bomb_png(image)
    with pytest.raises(Image.DecompressionBombError):  # the input is what the issue describes
        Image.open(image)
    proc = trm(env, "train", *tiny(world), "--out", tmp_path / "r", real=True)
    one_error(proc, f"{image}: cannot read image", "decompression bomb")


# --------------------------------------------------------------------------- --out folders
@pytest.mark.parametrize("where", ["file", "dev-null", "under-a-file"])
def test_out_at_a_file_is_one_error(env, tmp_path, where):
    (tmp_path / "afile").write_text("keep")
    out = {"file": tmp_path / "afile", "dev-null": Path("/dev/null"),
           "under-a-file": tmp_path / "afile" / "run"}[where]
    proc = trm(env, "train", *tiny(env["world"]), "--out", out)
    one_error(proc, str(out))
    assert (tmp_path / "afile").read_text() == "keep"


def _ro_mount(folder: Path) -> Path | None:
    """A read-only bind mount of ``folder`` (root does not obey chmod), or None where the
    sandbox cannot mount."""
    view = folder.parent / f"{folder.name}-ro"
    view.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return None
    if subprocess.run(["mount", "--bind", str(folder), str(view)], capture_output=True
                      ).returncode:
        return None
    if subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], capture_output=True
                      ).returncode:
        subprocess.run(["umount", "-l", str(view)])
        return None
    return view


def test_out_in_a_read_only_folder_is_one_error(env, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        view = folder
    else:
        view = _ro_mount(folder)
        if view is None:
            pytest.skip("root here, and no read-only mount allowed: cannot make a folder "
                        "root may not write")
    try:
        proc = trm(env, "train", *tiny(env["world"]), "--out", view / "run")
        one_error(proc, f"{view / 'run'}: cannot create the run folder (Read-only file system"
                  if view != folder else f"{view / 'run'}: cannot create the run folder")
    finally:
        if view != folder:
            subprocess.run(["umount", "-l", str(view)], check=True)


# ----------------------------------------------------------------------------- checkpoints
def _run_copy(env: dict, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(env["run"], run)
    return run


def _edit(path: Path, **changes) -> None:
    ckpt = torch.load(path, weights_only=True)
    ckpt.update(changes)
    torch.save(ckpt, path)


def test_a_five_class_checkpoint_in_a_four_class_run_is_one_error(env, tmp_path):
    run = _run_copy(env, tmp_path)
    ckpt = torch.load(run / "best.pt", weights_only=True)
    state = {k: torch.cat([v, v[:1]]) if v.ndim and v.shape[0] == 4 else v
             for k, v in ckpt["method"].items()}
    _edit(run / "best.pt", method=state, classes=["a", "b", "c", "d", "e"])
    one_error(trm(env, "evaluate", "--run", run), f"{run / 'best.pt'}: trained on 5 classes")
    del ckpt["classes"]  # an older checkpoint, without the recorded class list
    torch.save({**ckpt, "method": state}, run / "best.pt")
    one_error(trm(env, "evaluate", "--run", run), f"{run / 'best.pt'}: checkpoint does not fit",
              "size mismatch")


def test_nan_weights_in_a_checkpoint_are_one_error(env, tmp_path):
    run = _run_copy(env, tmp_path)
    state = torch.load(run / "best.pt", weights_only=True)["method"]
    state = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
             for k, v in state.items()}
    _edit(run / "best.pt", method=state)
    one_error(trm(env, "evaluate", "--run", run), f"{run / 'best.pt'}: non-finite (NaN/inf) "
                                                 f"weights")


def test_a_text_epoch_in_a_checkpoint_is_one_error(env, tmp_path):
    run = _run_copy(env, tmp_path)
    _edit(run / "best.pt", epoch="abc")
    one_error(trm(env, "evaluate", "--run", run), "field 'epoch' must be a whole number")


def test_pseudo_sources_of_a_method_without_entry_views_is_one_error(env, tmp_path):
    """DualCoOp in the issue; the linear probe takes the same branch (no ``entry_views``)."""
    one_error(trm(env, "evaluate", "--run", env["run"], "--pseudo-sources"),
              "method 'linear_probe' exposes no entry views")


def test_evaluating_an_empty_validation_split_is_one_error(env, tmp_path, monkeypatch):
    """Found in round 2: ``evaluate --split val`` of a run trained with data.val_fraction=0
    was ``ValueError: predict: no batches to score``."""
    monkeypatch.setenv("TRM_CACHE", env["env"]["TRM_CACHE"])
    cfg = RunConfig().with_overrides({**TINY, "data.root": str(env["world"]),
                                      "data.val_fraction": 0})
    run = T.train(cfg, tmp_path / "noval", log=None).out_dir
    one_error(trm(env, "evaluate", "--run", run, "--split", "val"),
              "split 'val' of this run has no images (data.val_fraction=0)")


# --------------------------------------------------------------------------------- course
@pytest.mark.parametrize("what", ["readme", "empty", "cells-5"])
def test_grading_a_file_that_is_no_notebook_is_one_error(env, tmp_path, what):
    path = tmp_path / f"{what}.ipynb"
    path.write_text({"readme": (REPO / "README.md").read_text(), "empty": "",
                     "cells-5": '{"cells": 5}'}[what])
    one_error(trm(env, "course", "--grade", path), f"{path}: not a notebook the grader can read")
