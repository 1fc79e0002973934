"""``train.precision=bf16``: CPU autocast for the methods measured faster under it (TRM-ML),
not for the others (DualCoOp), within a stated tolerance of fp32 on a tiny embedded world; and
fp32 runs keep their run-folder names."""

from __future__ import annotations

import pytest
import torch

import trm_lib.train as T
from trm_lib.config.run_config import ConfigError, RunConfig
from trm_lib.core.model import TRMML

#: largest |bf16 - fp32| test mAP accepted (mAP as a fraction; 0.01 = one point). A full
#: 12-epoch TRM-ML run on the embedded world differed by 0.00003 (issue 28); on this 64-image
#: world a few ties more or less move AP by far more than that.
TOLERANCE = 0.01

TINY = {"data.dataset": "synthscenes", "data.options": {"n_train": 64, "n_test": 48,
                                                         "image_size": 128},
        "data.val_fraction": 0.25, "backbone.image_size": 128, "train.epochs": 2,
        "train.batch_size": 32, "train.device": "cpu", "train.progress": False,
        "method.pseudo_warmup": 1}


@pytest.fixture(scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _run(tmp_path, name: str, precision: str, **over):
    cfg = RunConfig().with_overrides({**TINY, "method.name": name,
                                      "train.precision": precision, **over})
    return T.train(cfg, tmp_path / f"{name}-{precision}", log=lambda *a, **k: None)


def test_bf16_trm_ml_is_within_tolerance_of_fp32(tmp_path, one_thread):
    assert TRMML.cpu_bf16
    fp32 = _run(tmp_path, "trm_ml", "fp32")
    bf16 = _run(tmp_path, "trm_ml", "bf16")
    a, b = fp32.metrics["test"]["mAP"], bf16.metrics["test"]["mAP"]
    assert a != b  # autocast was applied (bf16 rounding changes the trained head)
    assert abs(a - b) <= TOLERANCE, (a, b)


def test_bf16_leaves_methods_it_slows_in_fp32(tmp_path, one_thread):
    over = {"train.epochs": 1}
    fp32 = _run(tmp_path, "dualcoop", "fp32", **over)
    bf16 = _run(tmp_path, "dualcoop", "bf16", **over)
    assert fp32.metrics["test"]["mAP"] == bf16.metrics["test"]["mAP"]


def test_precision_field_keeps_fp32_run_folders_and_names_bad_values():
    from trm_lib.utils.io import stable_hash

    base = RunConfig()
    before = {k: v for k, v in base.flat().items()
              if k not in T.NON_RESULT_FIELDS and k != "train.precision"}
    assert T.config_hash(base) == stable_hash(before)  # the hash of runs recorded before it
    assert T.config_hash(base) != T.config_hash(base.with_overrides({"train.precision": "bf16"}))
    with pytest.raises(ConfigError, match="train.precision"):
        base.with_overrides({"train.precision": "fp16"})
