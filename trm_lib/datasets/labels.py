"""Label matrices, the two missing-label protocols, persisted masks and the peers' text format.

Full labels are ``{1, -1}`` (N, C) int8 matrices; observed labels are ``{1, -1, 0}`` with 0 =
unknown. One flat N x C matrix for every dataset (docs/METHOD_CHOICES.md: 'Label protocol').

A mask is generated once per (dataset, fingerprint, split, protocol, p, seed), saved under the
cache with a SHA-256 sidecar and re-loaded ever after, so every method trains on the *same* bytes
even if numpy's random streams change between versions. Masks never go into the dataset folder
(one of the peers' anti-patterns): datasets are read-only inputs.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trm_lib.utils.errors import UserError
from trm_lib.utils.io import atomic_write, sha256_bytes, sha256_file
from trm_lib.utils.paths import cache_dir
from trm_lib.utils.safepath import inside

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pandas as pd

    from .base import MultiLabelDataset

PROTOCOLS = ("proportion", "single_positive", "full")

# Each random draw gets its own stream, keyed by (seed, purpose): ``default_rng(0)`` used for a
# mask must not replay the ``default_rng(0)`` stream that, say, generated the labels themselves
# (with the same stream, ``rand < 0.3`` labels and ``rand < p`` masks keep every positive).
_STREAM = {"proportion": 0x4D41534B, "single_positive": 0x53504F53, "split": 0x53504C54}


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise LabelError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _rng(seed: int, purpose: str) -> np.random.Generator:
    return np.random.default_rng([_check_seed(seed), _STREAM[purpose]])


class LabelError(UserError, ValueError):
    """A label matrix or label file is malformed; the message names the file/field."""


def check_labels(Y: np.ndarray, allowed: tuple[int, ...] = (1, -1, 0), where: str = "labels"
                 ) -> np.ndarray:
    """Return ``Y`` as an int8 (N, C) matrix or raise naming the first bad entry."""
    Y = np.asarray(Y)
    if Y.ndim != 2:
        raise LabelError(f"{where}: expected a 2-D (images x classes) matrix, got shape {Y.shape}")
    if Y.dtype.kind == "f" and not np.all(np.isfinite(Y)):
        raise LabelError(f"{where}: contains NaN/inf")
    bad = ~np.isin(Y, allowed)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise LabelError(f"{where}: value {Y[r, c].item()!r} at row {r}, column {c} is not in "
                         f"{allowed}")
    return Y.astype(np.int8)


# ---------------------------------------------------------------------------------------------
# Protocols
# ---------------------------------------------------------------------------------------------

def mask_proportion(Y: np.ndarray, p: float, seed: int) -> np.ndarray:
    """Protocol A: keep each (image, class) entry independently with probability ``p``, else 0.

    Positives and negatives are dropped alike (unlike the "positives dropped only" protocol of
    Hill/SPLC, which is not comparable). ``p = 1`` keeps everything.
    """
    Y = check_labels(Y, allowed=(1, -1), where="full labels")
    return keep_proportion(Y, _check_proportion(p), _rng(seed, "proportion"))


def keep_proportion(Y: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    """Protocol A's rule with the caller's generator: one ``rng.random(Y.shape)`` draw, keep an
    entry where it is ``< p``, else 0 (the course's masking exercise is checked against this)."""
    keep = rng.random(Y.shape) < p
    return np.where(keep, Y, 0).astype(np.int8)


def single_positive(Y: np.ndarray, seed: int) -> np.ndarray:
    """Protocol B: each image keeps exactly one positive chosen uniformly, nothing else.

    Images without any positive end up all-unknown (they carry no observed label at all).
    """
    Y = check_labels(Y, allowed=(1, -1), where="full labels")
    # One uniform key per entry; the largest key among a row's positives picks its survivor.
    keys = _rng(seed, "single_positive").random(Y.shape)
    keys[Y != 1] = -1.0
    pick = keys.argmax(axis=1)
    out = np.zeros_like(Y)
    rows = np.flatnonzero((Y == 1).any(axis=1))
    out[rows, pick[rows]] = 1
    return out


def _check_proportion(p: float) -> float:
    try:
        p = float(p)
    except (TypeError, ValueError):
        raise LabelError(f"label proportion p must be a number in (0, 1], got {p!r}") from None
    if not (0.0 < p <= 1.0):
        raise LabelError(f"label proportion p must be in (0, 1], got {p}")
    return p


def _check_observed(Y_obs: np.ndarray, Y_full: np.ndarray, protocol: str, where: str,
                    text_file: bool = False) -> np.ndarray:
    """Check an observed matrix against the full labels and the protocol's structure."""
    Y_obs = check_labels(Y_obs, where=where)
    if Y_obs.shape != Y_full.shape:
        raise LabelError(f"{where}: shape {Y_obs.shape} does not match the dataset's full labels "
                         f"{Y_full.shape} (images x classes)")
    wrong = (Y_obs != 0) & (Y_obs != Y_full)
    if wrong.any():
        r, c = np.argwhere(wrong)[0]
        at = f"{where}:{r + 1}: row {r}" if text_file else f"{where}: row {r}"
        raise LabelError(f"{at}, column {c} is {Y_obs[r, c]} but the full label is "
                         f"{Y_full[r, c]}")
    if protocol == "single_positive":
        if (Y_obs == -1).any():
            r = int(np.argwhere(Y_obs == -1)[0, 0])
            raise LabelError(f"{where}: single-positive mask has a negative in row {r}")
        many = np.flatnonzero((Y_obs == 1).sum(axis=1) > 1)
        if many.size:
            raise LabelError(f"{where}: single-positive mask has several positives in row "
                             f"{many[0]}")
    elif protocol == "full" and (Y_obs == 0).any():
        r, c = np.argwhere(Y_obs == 0)[0]
        raise LabelError(f"{where}: protocol 'full' but row {r}, column {c} is unknown (0)")
    return Y_obs


# ---------------------------------------------------------------------------------------------
# Persisted masks
# ---------------------------------------------------------------------------------------------

#: where masks missing from the cache are stored instead of the cache (see masks_written_to)
_MASK_OUT: ContextVar[Path | None] = ContextVar("trm_mask_out", default=None)


@contextlib.contextmanager
def masks_written_to(folder: str | os.PathLike) -> Iterator[Path]:
    """Inside the block, a mask the cache does not hold yet is generated and stored under
    ``folder`` (and read back from there), never in the cache: for callers that must not write
    into a shared, possibly read-only ``TRM_CACHE`` (the explorer). Masks already in the cache
    are still read from it: they are the same bytes (a pure function of dataset, p and seed)."""
    token = _MASK_OUT.set(Path(folder))
    try:
        yield Path(folder)
    finally:
        _MASK_OUT.reset(token)


def mask_path(dataset: MultiLabelDataset, protocol: str, p: float | None = None, seed: int = 0,
              cache_root: str | os.PathLike | None = None) -> Path:
    """Where the mask of (dataset, fingerprint, split, protocol, p, seed) lives.

    ``<cache>/masks/<dataset>/<split>-<fingerprint>/<protocol>[_p<p>]_seed<seed>.npy``; ``p`` is
    part of the key for protocol A only. ``cache_root`` replaces :func:`trm_lib.utils.paths.cache_dir`.
    """
    if protocol not in ("proportion", "single_positive"):
        raise LabelError(f"protocol must be 'proportion' or 'single_positive' for a stored mask, "
                         f"got {protocol!r}")
    root = Path(cache_root) if cache_root is not None else cache_dir()
    stem = protocol
    if protocol == "proportion":
        stem += f"_p{_check_proportion(p):.6g}"  # type: ignore[arg-type]
    stem += f"_seed{_check_seed(seed)}"
    key = f"{dataset.split}-{dataset.fingerprint()}"
    return root / "masks" / dataset.name / key / f"{stem}.npy"


def observed_labels(dataset: MultiLabelDataset, protocol: str = "proportion",
                    p: float | None = None, seed: int = 0, *,
                    cache_root: str | os.PathLike | None = None, source: str = "generate",
                    path: str | os.PathLike | None = None) -> np.ndarray:
    """The {1,-1,0} training labels every method sees for ``dataset`` under ``protocol``.

    - ``protocol="full"``: a copy of the full labels (nothing random, nothing stored).
    - ``source="generate"`` (default): load the stored mask (see :func:`mask_path`), verifying
      its ``.sha256`` sidecar; generate and store it on first use. A mask whose checksum does not
      match is refused, never overwritten: it may be what earlier results were trained on.
    - ``source="peer"``: import ``path`` in the peers' text format (e.g. the TaI-DPT
      ``train_proportion_0.1.txt``); every known entry must agree with the full labels.

    The mask belongs to the dataset *as given*: a subset has another fingerprint, hence its own
    mask (a mask of a subset is not the subset of a mask).
    """
    if protocol not in PROTOCOLS:
        raise LabelError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    Y_full = check_labels(dataset.labels, allowed=(1, -1),
                          where=f"{dataset.name}/{dataset.split} full labels")
    if source == "peer":
        if path is None:
            raise LabelError("observed_labels(source='peer') needs path= (a peer label file)")
        Y = read_peer_labels(path, num_classes=dataset.num_classes)
        return _check_observed(Y, Y_full, protocol, where=str(path), text_file=True)
    if source != "generate":
        raise LabelError(f"source must be 'generate' or 'peer', got {source!r}")
    if protocol == "full":
        return Y_full.copy()

    file = mask_path(dataset, protocol, p, seed, cache_root)
    _refuse_inside(file, dataset.root)
    if file.exists():
        return _load_mask(file, Y_full, protocol)
    if cache_root is None and _MASK_OUT.get() is not None:
        file = mask_path(dataset, protocol, p, seed, _MASK_OUT.get())
        _refuse_inside(file, dataset.root)
        if file.exists():
            return _load_mask(file, Y_full, protocol)
    if protocol == "proportion":
        Y = mask_proportion(Y_full, p, seed)  # type: ignore[arg-type]
    else:
        Y = single_positive(Y_full, seed)
    _save_mask(file, Y)
    return Y


def _refuse_inside(file: Path, dataset_root: Path) -> None:
    try:
        file.resolve().relative_to(Path(dataset_root).resolve())
    except ValueError:
        return
    raise LabelError(f"{file}: masks must not be written inside the dataset folder "
                     f"{dataset_root}; point TRM_CACHE (or cache_root) elsewhere")


def _sidecar(file: Path) -> Path:
    return file.with_name(file.name + ".sha256")


def _save_mask(file: Path, Y: np.ndarray) -> None:
    """Write the sidecar first, then the mask (both atomic).

    An interruption between the two leaves a sidecar without a mask, which the next call simply
    regenerates; a mask is therefore never on disk without its checksum.
    """
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(Y, dtype=np.int8), allow_pickle=False)
    data = buf.getvalue()
    with atomic_write(_sidecar(file)) as fh:
        fh.write(f"{sha256_bytes(data)}  {file.name}\n")  # `sha256sum -c` format
    with atomic_write(file, "wb") as fh:
        fh.write(data)


def _load_mask(file: Path, Y_full: np.ndarray, protocol: str) -> np.ndarray:
    side = _sidecar(file)
    if not side.exists():
        raise LabelError(f"{file}: checksum file {side.name} is missing, so the mask cannot be "
                         f"verified; delete {file} to regenerate it")
    tokens = side.read_text().split()
    expected = tokens[0] if tokens else ""
    if len(tokens) > 1 and inside(file.parent, tokens[1], field="file name", record=side,
                                  error=LabelError).name != file.name:
        raise LabelError(f"{side}: names {tokens[1]!r}, not the mask {file.name}; delete both "
                         f"files to regenerate the mask")
    actual = sha256_file(file)
    if actual != expected:
        raise LabelError(f"{file}: SHA-256 {actual[:12]}… does not match {side.name} "
                         f"({expected[:12] or 'empty'}…); the mask was modified or corrupted. "
                         f"Refusing to use or overwrite it — restore it or delete both files")
    try:
        Y = np.load(file, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise LabelError(f"{file}: cannot read mask ({err})") from None
    return _check_observed(Y, Y_full, protocol, where=str(file))


# ---------------------------------------------------------------------------------------------
# Peer text format
# ---------------------------------------------------------------------------------------------

def read_peer_labels(path: str | os.PathLike, num_classes: int | None = None) -> np.ndarray:
    """Read the peers' text format: one row per image, comma-separated 1/-1/0.

    Blank lines are allowed only at the end: one in the middle would silently shift every
    following image onto the wrong row.
    """
    path = Path(path)
    if not path.exists():
        raise LabelError(f"{path}: label file not found")
    lines = path.read_text().splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise LabelError(f"{path}: empty label file")
    rows: list[list[int]] = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            raise LabelError(f"{path}:{lineno}: blank line inside the label matrix")
        try:
            row = [int(v) for v in line.split(",")]
        except ValueError:
            raise LabelError(f"{path}:{lineno}: values must be integers 1, -1 or 0, "
                             f"got {line.strip()[:60]!r}") from None
        if rows and len(row) != len(rows[0]):
            raise LabelError(f"{path}:{lineno}: {len(row)} columns, expected {len(rows[0])}")
        rows.append(row)
    Y = np.asarray(rows)
    bad = ~np.isin(Y, (1, -1, 0))
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise LabelError(f"{path}:{r + 1}: value {Y[r, c]} in column {c} is not 1, -1 or 0")
    if num_classes is not None and Y.shape[1] != num_classes:
        raise LabelError(f"{path}: {Y.shape[1]} columns, expected {num_classes} classes")
    return Y.astype(np.int8)


def write_peer_labels(path: str | os.PathLike, Y: np.ndarray) -> Path:
    """Write ``Y`` in the peers' text format (atomic; ``\\n`` line ends, trailing newline)."""
    Y = check_labels(Y, where=str(path))
    with atomic_write(path, newline="\n") as fh:
        for row in Y:
            fh.write(",".join(str(int(v)) for v in row) + "\n")
    return Path(path)


# ---------------------------------------------------------------------------------------------
# Summaries and splits
# ---------------------------------------------------------------------------------------------

def label_stats(Y_obs: np.ndarray, class_names: Sequence[str],
                Y_full: np.ndarray | None = None) -> pd.DataFrame:
    """Per-class counts of an observed matrix, plus a ``total`` row.

    Columns: ``known_fraction`` (share of images whose entry is observed), ``positives``,
    ``negatives``, ``unknown`` and, given ``Y_full``, ``hidden_positives`` (true positives the
    mask hid: what pseudo-labelling could recover).
    """
    import pandas as pd

    Y_obs = check_labels(Y_obs, where="observed labels")
    if len(class_names) != Y_obs.shape[1]:
        raise LabelError(f"class_names: {len(class_names)} names for {Y_obs.shape[1]} columns")
    cols = {
        "positives": (Y_obs == 1).sum(axis=0),
        "negatives": (Y_obs == -1).sum(axis=0),
        "unknown": (Y_obs == 0).sum(axis=0),
    }
    if Y_full is not None:
        Y_full = check_labels(Y_full, allowed=(1, -1), where="full labels")
        if Y_full.shape != Y_obs.shape:
            raise LabelError(f"full labels: shape {Y_full.shape} != observed {Y_obs.shape}")
        cols["hidden_positives"] = ((Y_obs == 0) & (Y_full == 1)).sum(axis=0)
    df = pd.DataFrame({k: v.astype(np.int64) for k, v in cols.items()},
                      index=pd.Index(list(class_names), name="class"))
    df.loc["total"] = df.sum(axis=0)
    n_rows = np.where(df.index == "total", Y_obs.size, Y_obs.shape[0])
    df.insert(0, "known_fraction", (df["positives"] + df["negatives"]) / n_rows)
    return df


def cooccurrence(Y: np.ndarray) -> np.ndarray:
    """C x C matrix of P(class j positive | class i positive), estimated from the positives.

    Row i is NaN for a class with no positive (the conditional is undefined); the diagonal is 1
    otherwise. Unknown (0) and negative entries count as "not positive".
    """
    Y = check_labels(Y, where="labels")
    P = (Y == 1).astype(np.float64)
    joint = P.T @ P
    counts = np.diag(joint).copy()
    with np.errstate(invalid="ignore", divide="ignore"):
        cond = joint / counts[:, None]
    cond[counts == 0] = np.nan
    return cond


def train_val_split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic held-out split of ``range(n)``: ``(train_idx, val_idx)``, each sorted.

    ``round(n * val_fraction)`` images (at least one when the fraction is positive) go to
    validation, which the trainer uses for model selection instead of the test set.
    """
    if int(n) != n or n < 1:
        raise LabelError(f"train_val_split: n must be a positive integer, got {n!r}")
    if not (0.0 <= val_fraction < 1.0):
        raise LabelError(f"train_val_split: val_fraction must be in [0, 1), got {val_fraction}")
    n = int(n)
    n_val = 0 if val_fraction == 0 else max(1, round(n * val_fraction))
    if n_val >= n:  # a user's setting (data.max_train=1), hence LabelError: one error line
        raise LabelError(f"data.val_fraction {val_fraction} of {n} training image(s) leaves no "
                         f"training image; raise data.max_train or set data.val_fraction=0")
    perm = _rng(seed, "split").permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])
