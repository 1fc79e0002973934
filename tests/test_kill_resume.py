"""A training run killed with SIGKILL in the middle of an epoch resumes from its last checkpoint
to exactly the final metrics, scores and history of an uninterrupted run with the same seed.

Every run is a real ``python -m trm_lib train`` process (one thread) on the tiny square world
of ``fixture_writers``, TRM-ML on live images with augmentation, so resuming has to restore the
method, its memories, the optimiser and every random stream."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import fixture_writers as fx
import numpy as np
import pandas as pd
import pytest
import torch

from trm_lib.config.run_config import RunConfig

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 4


def _command(cfg_file: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "trm_lib", "train", "--config", str(cfg_file), "--out",
            str(out), "--no-progress"]


def _env(cache: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "TRM_CACHE": str(cache), "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}


def _checkpoint_epoch(out: Path) -> int:
    try:
        return int(torch.load(out / "last.pt", weights_only=True)["epoch"])
    except (FileNotFoundError, RuntimeError, EOFError, KeyError):
        return 0


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_result(tmp_path):
    world = fx.write_square_world(tmp_path / "world", 48, 24, 0)
    cfg = RunConfig().with_overrides({
        "data.dataset": "folder", "data.root": str(world), "data.proportion": 0.5,
        "data.val_fraction": 0.25, "backbone.model": "TinyCLIP-RN", "backbone.pretrained": None,
        "backbone.image_size": 64, "train.epochs": EPOCHS, "train.batch_size": 4,
        "train.lr": 0.01, "train.device": "cpu", "train.use_cache": False,
        "train.augment": "crop_flip", "method.name": "trm_ml", "method.num_heads": 2,
        "method.pseudo_warmup": 1})
    cfg_file = tmp_path / "run.yaml"
    cfg.to_yaml(cfg_file)
    env = _env(tmp_path / "cache")
    full, cut = tmp_path / "full", tmp_path / "cut"
    subprocess.run(_command(cfg_file, full), env=env, check=True, capture_output=True, timeout=600)
    epoch_seconds = float(pd.read_csv(full / "history.csv")["seconds"].iloc[1:].median())

    proc = subprocess.Popen(_command(cfg_file, cut), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while _checkpoint_epoch(cut) < 1 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.5 * epoch_seconds)  # half way through the next epoch
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL, "the run ended before it was killed"
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = _checkpoint_epoch(cut)
    assert 1 <= killed_at < EPOCHS and not (cut / "result.json").exists()

    resumed = subprocess.run(_command(cfg_file, cut), env=env, check=True, capture_output=True,
                             text=True, timeout=600)
    assert f"after epoch {killed_at}" in resumed.stdout + resumed.stderr
    a, b = (json.loads((d / "result.json").read_text()) for d in (full, cut))
    np.testing.assert_equal(b["metrics"], a["metrics"])  # exact, NaN-aware
    np.testing.assert_array_equal(np.load(cut / "test_scores.npy"),
                                  np.load(full / "test_scores.npy"))
    ha, hb = (pd.read_csv(d / "history.csv").drop(columns="seconds") for d in (full, cut))
    pd.testing.assert_frame_equal(hb, ha)
