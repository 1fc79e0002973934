"""Training, evaluation and run folders under one name: ``trm_lib.train`` re-exports them.

The trainer lives in rooms by concept; this module keeps the public names notebooks, tests and
scripts import from ``trm_lib.train``:

- :mod:`trm_lib.train.trainer` — the epoch loop, :func:`train` (fairness, selection, multi-GPU rules)
- :mod:`trm_lib.train.evaluation` — the one evaluator: :func:`predict`, :func:`observed_metrics`, …
- :mod:`trm_lib.train.runs` — run folders, checkpoints, :class:`RunResult`, :func:`load_run`
- :mod:`trm_lib.train.session` — device, seeds, data with its label mask, feature sources
- :mod:`trm_lib.train.bench` — ``python -m trm_lib bench train``
"""

from __future__ import annotations

from trm_lib.utils.errors import TrainingError

from .bench import bench
from .evaluation import (
           eval_outputs,
           evaluate,
           observed_metrics,
           predict,
           predict_split,
           score_metrics,
)
from .runs import (
           NON_RESULT_FIELDS,
           LoadedRun,
           RunResult,
           config_hash,
           default_out_dir,
           load_result,
           load_run,
           provenance,
)
from .session import (
           Batch,
           CachedFeatures,
           LiveFeatures,
           Resources,
           RunData,
           Session,
           prepare_data,
           prompt_names,
           prompt_words,
           resolve_device,
           seed_everything,
)
from .trainer import epoch_order, lr_at, train

__all__ = ["NON_RESULT_FIELDS", "Batch", "CachedFeatures", "LiveFeatures", "LoadedRun",
           "Resources", "RunData", "RunResult", "Session", "TrainingError", "bench",
           "config_hash", "default_out_dir", "epoch_order", "eval_outputs", "evaluate",
           "load_result", "load_run", "lr_at", "observed_metrics", "predict", "predict_split",
           "prepare_data", "prompt_names", "prompt_words", "provenance", "resolve_device",
           "score_metrics", "seed_everything", "train"]
