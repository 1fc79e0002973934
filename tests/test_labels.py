"""Label protocols, persisted masks, the peers' text format and label summaries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trm_lib.datasets import MultiLabelDataset
from trm_lib.datasets import labels as L
from trm_lib.datasets.classes import VOC_CLASSES
from trm_lib.datasets.labels import LabelError
from trm_lib.utils.paths import PACKAGE_DIR

VOC = PACKAGE_DIR / "data" / "voc2007_labels"
PEER_P01 = VOC / "partial-labels" / "train_proportion_0.1.txt"


@pytest.fixture(scope="module")
def voc_full() -> np.ndarray:
    return L.read_peer_labels(VOC / "train_full.txt", num_classes=20)


def _full(n: int = 5000, c: int = 20, seed: int = 0, pos_rate: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.where(rng.random((n, c)) < pos_rate, 1, -1).astype(np.int8)


def _dataset(root: Path, Y: np.ndarray, name: str = "toy", classes=None) -> MultiLabelDataset:
    classes = classes or [f"class{j}" for j in range(Y.shape[1])]
    paths = [root / f"img_{i:05d}.png" for i in range(Y.shape[0])]  # never opened here
    return MultiLabelDataset(name, "train", root, paths, Y, list(classes))


# ------------------------------------------------------------------------------- protocol A / B

@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.9])
def test_mask_proportion_keep_rates(p):
    Y = _full(seed=0)  # labels drawn from default_rng(0): the mask's seed-0 stream must differ
    M = L.mask_proportion(Y, p, seed=0)
    assert M.dtype == np.int8 and M.shape == Y.shape
    known = M != 0
    assert np.array_equal(M[known], Y[known])  # kept entries are the true labels
    assert abs(known.mean() - p) < 0.01
    assert abs(known[Y == 1].mean() - p) < 0.015  # positives and negatives dropped alike
    assert abs(known[Y == -1].mean() - p) < 0.015


def test_mask_proportion_seeding_and_bounds():
    Y = _full(500, 10)
    a, b = L.mask_proportion(Y, 0.3, seed=1), L.mask_proportion(Y, 0.3, seed=1)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, L.mask_proportion(Y, 0.3, seed=2))
    assert np.array_equal(L.mask_proportion(Y, 1.0, seed=0), Y)
    for bad in (0, -0.1, 1.5, float("nan"), "half"):
        with pytest.raises(LabelError, match="proportion p"):
            L.mask_proportion(Y, bad, seed=0)
    with pytest.raises(LabelError, match="seed"):
        L.mask_proportion(Y, 0.3, seed=-1)
    with pytest.raises(LabelError, match="full labels"):
        L.mask_proportion(L.mask_proportion(Y, 0.5, seed=0), 0.5, seed=0)  # already masked


def test_single_positive_keeps_one_true_positive():
    Y = _full(2000, 20, pos_rate=0.1)
    Y[:7] = -1  # images without a positive
    M = L.single_positive(Y, seed=3)
    has_pos = (Y == 1).any(axis=1)
    assert np.array_equal((M == 1).sum(axis=1), has_pos.astype(int))
    assert np.all(Y[M == 1] == 1) and not (M == -1).any()
    assert not M[:7].any()
    assert np.array_equal(M, L.single_positive(Y, seed=3))
    assert not np.array_equal(M, L.single_positive(Y, seed=4))


def test_single_positive_is_uniform_over_positives():
    Y = -np.ones((4000, 6), np.int8)
    Y[:, [0, 2, 3, 5]] = 1
    counts = (L.single_positive(Y, seed=0) == 1).sum(axis=0)
    assert counts[[1, 4]].tolist() == [0, 0]
    assert np.all(np.abs(counts[[0, 2, 3, 5]] - 1000) < 110)  # ~3.6 sigma


# ---------------------------------------------------------------------------- persisted masks

def test_mask_is_persisted_reloaded_and_keyed(tmp_path, monkeypatch):
    ds = _dataset(tmp_path / "data", _full(300, 8))
    cache = tmp_path / "cache"
    M = L.observed_labels(ds, "proportion", 0.3, seed=0, cache_root=cache)
    file = L.mask_path(ds, "proportion", 0.3, 0, cache)
    assert file.is_file() and file.with_name(file.name + ".sha256").is_file()
    assert cache / "masks" / "toy" in file.parents
    assert not any((tmp_path / "data").glob("**/*"))  # nothing written into the dataset
    assert np.array_equal(M, L.mask_proportion(ds.labels, 0.3, seed=0))
    raw = file.read_bytes()

    def boom(*args, **kwargs):
        raise AssertionError("regenerated instead of loaded")

    monkeypatch.setattr(L, "mask_proportion", boom)
    again = L.observed_labels(ds, "proportion", 0.3, seed=0, cache_root=cache)
    assert np.array_equal(again, M) and file.read_bytes() == raw
    monkeypatch.undo()

    other = L.observed_labels(ds, "proportion", 0.3, seed=1, cache_root=cache)
    assert not np.array_equal(other, M)
    assert L.mask_path(ds, "proportion", 0.3, 1, cache) != file
    assert L.mask_path(ds, "proportion", 0.5, 0, cache) != file
    sub = ds.subset(range(100))
    assert L.mask_path(sub, "proportion", 0.3, 0, cache).parent != file.parent  # fingerprint

    B = L.observed_labels(ds, "single_positive", None, seed=0, cache_root=cache)
    assert np.array_equal(B, L.single_positive(ds.labels, seed=0))
    assert L.mask_path(ds, "single_positive", 0.9, 0, cache).is_file()  # p not in the key
    full = L.observed_labels(ds, "full", cache_root=cache)
    assert np.array_equal(full, ds.labels) and full is not ds.labels


def test_default_cache_location_follows_trm_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TRM_CACHE", str(tmp_path / "c"))
    ds = _dataset(tmp_path / "data", _full(50, 4))
    L.observed_labels(ds, "proportion", 0.5, seed=0)
    assert L.mask_path(ds, "proportion", 0.5, 0).is_relative_to(tmp_path / "c" / "masks")
    assert L.mask_path(ds, "proportion", 0.5, 0).is_file()


def test_tampered_mask_is_refused_and_left_untouched(tmp_path):
    ds = _dataset(tmp_path / "data", _full(200, 5))
    cache = tmp_path / "cache"
    L.observed_labels(ds, "proportion", 0.5, seed=0, cache_root=cache)
    file = L.mask_path(ds, "proportion", 0.5, 0, cache)
    data = bytearray(file.read_bytes())
    data[-1] = {0: 1, 1: 255, 255: 0}[data[-1]]  # another valid label: only the checksum sees it
    file.write_bytes(bytes(data))
    with pytest.raises(LabelError, match=str(file.name)) as err:
        L.observed_labels(ds, "proportion", 0.5, seed=0, cache_root=cache)
    assert "does not match" in str(err.value)
    assert file.read_bytes() == bytes(data)
    file.with_name(file.name + ".sha256").unlink()
    with pytest.raises(LabelError, match="missing"):
        L.observed_labels(ds, "proportion", 0.5, seed=0, cache_root=cache)
    assert file.read_bytes() == bytes(data)


def test_masks_never_go_inside_the_dataset(tmp_path):
    ds = _dataset(tmp_path, _full(20, 3))
    with pytest.raises(LabelError, match="inside the dataset folder"):
        L.observed_labels(ds, "proportion", 0.5, seed=0, cache_root=tmp_path / "cache")
    with pytest.raises(LabelError, match="protocol"):
        L.observed_labels(ds, "positives_only", 0.5, seed=0, cache_root=tmp_path / "c")
    with pytest.raises(LabelError, match="proportion p"):
        L.observed_labels(_dataset(tmp_path / "d", _full(20, 3)), "proportion", None,
                          cache_root=tmp_path / "c")


# ------------------------------------------------------------------------------ peer text format

def test_real_peer_mask_counts_and_agreement(voc_full, tmp_path):
    assert voc_full.shape == (5011, 20) and (voc_full == 1).sum() == 7306
    M = L.read_peer_labels(PEER_P01, num_classes=20)
    assert ((M == 1).sum(), (M == -1).sum(), (M == 0).sum()) == (740, 9368, 90112)
    ds = _dataset(tmp_path, voc_full, name="voc2007", classes=VOC_CLASSES)
    imported = L.observed_labels(ds, "proportion", source="peer", path=PEER_P01)
    assert np.array_equal(imported, M)
    stats = L.label_stats(M, VOC_CLASSES, voc_full)
    total = stats.loc["total"]
    assert (total.positives, total.negatives, total.unknown) == (740, 9368, 90112)
    assert total.hidden_positives == 7306 - 740
    assert total.known_fraction == pytest.approx((740 + 9368) / M.size)
    assert stats.loc["person"].positives + stats.loc["person"].hidden_positives == \
        (voc_full[:, VOC_CLASSES.index("person")] == 1).sum()
    assert (stats.drop("total")[["positives", "negatives", "unknown"]].sum(axis=1) == 5011).all()


@pytest.mark.parametrize("p", [0.3, 0.9])
def test_real_peer_masks_follow_protocol_a(voc_full, p):
    M = L.read_peer_labels(VOC / "partial-labels" / f"train_proportion_{p}.txt", 20)
    known = M != 0
    assert np.array_equal(M[known], voc_full[known])
    assert abs(known.mean() - p) < 0.01


@pytest.mark.parametrize("name", ["partial-labels/train_proportion_0.1.txt", "train_full.txt"])
def test_peer_round_trip_is_byte_identical(name, tmp_path):
    src = VOC / name
    out = L.write_peer_labels(tmp_path / "copy.txt", L.read_peer_labels(src))
    assert out.read_bytes() == src.read_bytes()


@pytest.mark.parametrize("text, match", [
    ("1,-1,0\n1,2,0\n", r"bad.txt:2: value 2 in column 1"),
    ("1,-1,0\n1,x,0\n", r"bad.txt:2: values must be integers"),
    ("1,-1,0\n1,-1,0\n1,-1\n", r"bad.txt:3: 2 columns, expected 3"),
    ("1,-1,0\n\n1,-1,0\n", r"bad.txt:2: blank line"),
    ("\n\n", r"bad.txt: empty"),
])
def test_malformed_peer_file_names_file_and_line(tmp_path, text, match):
    bad = tmp_path / "bad.txt"
    bad.write_text(text)
    with pytest.raises(LabelError, match=match):
        L.read_peer_labels(bad)


def test_peer_import_must_agree_with_full_labels(tmp_path):
    Y = _full(30, 4)
    ds = _dataset(tmp_path / "data", Y)
    M = L.mask_proportion(Y, 0.5, seed=0)
    r, c = np.argwhere(M != 0)[5]
    M[r, c] = -M[r, c]
    peer = L.write_peer_labels(tmp_path / "peer.txt", M)
    with pytest.raises(LabelError, match=rf"peer.txt:{r + 1}: row {r}, column {c}"):
        L.observed_labels(ds, "proportion", source="peer", path=peer)
    narrow = L.write_peer_labels(tmp_path / "narrow.txt", M[:, :3])
    with pytest.raises(LabelError, match="3 columns, expected 4"):
        L.observed_labels(ds, "proportion", source="peer", path=narrow)
    two = L.write_peer_labels(tmp_path / "two.txt", np.where(Y == 1, 1, 0))
    with pytest.raises(LabelError, match="several positives"):
        L.observed_labels(ds, "single_positive", source="peer", path=two)


# ---------------------------------------------------------------------------- summaries, splits

def test_cooccurrence_matches_counting():
    Y = _full(300, 6, pos_rate=0.3)
    Y[:, 4] = -1
    Y[0, 0] = 0  # unknown counts as "not positive"
    got = L.cooccurrence(Y)
    for i in range(6):
        for j in range(6):
            n_i = (Y[:, i] == 1).sum()
            if n_i == 0:
                assert np.isnan(got[i, j])
            else:
                assert got[i, j] == pytest.approx(((Y[:, i] == 1) & (Y[:, j] == 1)).sum() / n_i)
    assert np.allclose(np.diag(got)[[0, 1, 2, 3, 5]], 1.0)


def test_train_val_split():
    tr, va = L.train_val_split(1000, 0.1, seed=0)
    assert len(va) == 100 and len(tr) == 900
    assert np.array_equal(np.sort(np.concatenate([tr, va])), np.arange(1000))
    tr2, va2 = L.train_val_split(1000, 0.1, seed=0)
    assert np.array_equal(va, va2) and np.array_equal(tr, tr2)
    assert not np.array_equal(va, L.train_val_split(1000, 0.1, seed=1)[1])
    assert len(L.train_val_split(5, 0.05, seed=0)[1]) == 1
    assert len(L.train_val_split(5, 0.0, seed=0)[1]) == 0
    for n, f in ((10, 1.0), (10, -0.1), (0, 0.1), (1, 0.5)):
        with pytest.raises(ValueError):
            L.train_val_split(n, f, seed=0)
