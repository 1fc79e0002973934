"""Further faults tried for issue 29 beyond its list (docs/RELIABILITY.md, "Round 2: further
cases"): each is refused in one line naming the file or field, or shown to be handled."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import fixture_writers as fx
import pytest
import torch

from trm_lib.__main__ import main
from trm_lib.backbone.store import FeatureCacheError, read_manifest
from trm_lib.config.run_config import ConfigError, read_yaml
from trm_lib.datasets import read_generic
from trm_lib.train.runs import load_checkpoint
from trm_lib.utils.errors import FileError


def cli(*args, **env: str) -> tuple[int, str]:
    err = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stderr(err), \
            contextlib.redirect_stdout(io.StringIO()):
        mp.delenv("TRM_DEBUG", raising=False)
        for key, value in env.items():
            mp.setenv(key, value)
        code = main([str(a) for a in args])
    return code, err.getvalue()


def one_error(result: tuple[int, str], fragment: str) -> None:
    code, err = result
    # a warning line before the error is information, not a traceback (e.g. the tiny worlds
    # here leave a class without an observed positive, which training says)
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("warning: ")]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err[-2000:]
    assert fragment in lines[0], lines[0]


# ---------------------------------------------------------------------------- YAML as a resource
def test_a_deeply_nested_yaml_is_one_error_not_a_recursion_traceback(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("train: " + "[" * 20000 + "]" * 20000 + "\n")
    with pytest.raises(ConfigError, match=rf"^{path}: nested too deeply"):
        read_yaml(path)


@pytest.mark.parametrize("where", ["/dev/zero", "folder"])
def test_a_config_that_is_no_regular_file_is_refused_without_reading_it(tmp_path, where):
    """/dev/zero was read forever (memory growing until killed)."""
    path = Path(where) if where.startswith("/") else tmp_path
    one_error(cli("train", "--config", path), f"{path}: the config file must be a regular file")


def test_a_huge_yaml_is_refused_by_size(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("train:\n" + "  # padding\n" * 500_000)
    with pytest.raises(ConfigError, match=rf"^{path}: the config file is larger than 4 MiB"):
        read_yaml(path)


# ------------------------------------------------------------------------------- datasets
def test_a_label_csv_with_a_byte_order_mark_reads_like_without(tmp_path):
    """Excel's "CSV UTF-8" starts with a BOM: the header's first field was '\\ufeffimage' and
    the error said the header must be 'image,...' (the file looked right)."""
    world = fx.write_square_world(tmp_path / "w", 4, 2, 0)
    plain = read_generic(world, "train")
    ann = world / "annotations" / "train.csv"
    ann.write_bytes(b"\xef\xbb\xbf" + ann.read_bytes())
    bom = read_generic(world, "train")
    assert bom.class_names == plain.class_names and bom.image_paths == plain.image_paths
    assert (bom.labels == plain.labels).all()


# ------------------------------------------------------------------------------ records on disk
def _manifest(folder: Path, arrays: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps({
        "format": 2, "key": {}, "n": 1, "grid": [1, 1], "embed_dim": 1, "dense_dim": 1,
        "arrays": arrays, "completed": 0, "complete": False}))
    return folder


@pytest.mark.parametrize(("arrays", "fragment"), [
    ({"global": {"file": 5}}, "field 'arrays.global.file' must name a file inside"),
    ({"global": {"file": "global.npy"}, "extra": {"file": "../../x.npy"}},
     "field 'arrays.extra.file' = '../../x.npy' points outside"),
    ({"global": "global.npy"}, "'arrays' is not a mapping of array specs"),
], ids=["file-int", "extra-entry-outside", "spec-not-a-mapping"])
def test_every_manifest_entry_is_checked_on_read(tmp_path, arrays, fragment):
    folder = _manifest(tmp_path / "store", arrays)
    with pytest.raises(FeatureCacheError, match=fragment.replace("(", r"\(").replace(".", r"\.")):
        read_manifest(folder)


def test_checkpoint_classes_must_be_a_list_of_names(tmp_path):
    path = tmp_path / "best.pt"
    torch.save({"config": {}, "method": {}, "epoch": 1, "classes": 5}, path)
    with pytest.raises(FileError, match=rf"^{path}: field 'classes' is not a list"):
        load_checkpoint(path)


# ------------------------------------------------------------------------------ folders as input
def test_trm_cache_at_a_file_is_one_error(tmp_path):
    (tmp_path / "afile").write_text("x")
    world = fx.write_square_world(tmp_path / "w", 4, 2, 0)
    one_error(cli("features", "--dataset", "folder", "--root", world, "--pretrained", "none",
                  "--image-size", "64", TRM_CACHE=str(tmp_path / "afile")),
              f"{tmp_path / 'afile'}: cannot create the folder")


def test_report_out_at_a_file_is_one_error(tmp_path):
    (tmp_path / "afile").write_text("keep")
    one_error(cli("report", "--only", "01", "--out", tmp_path / "afile", "--jobs", "1"),
              str(tmp_path / "afile"))
    assert (tmp_path / "afile").read_text() == "keep"


def test_evaluate_a_run_that_is_a_file_is_one_error(tmp_path):
    (tmp_path / "afile").write_text("x")
    one_error(cli("evaluate", "--run", tmp_path / "afile"), "best.pt")


# ------------------------------------------------------------------ outputs that are not files
def test_an_atomic_write_never_replaces_a_device_fifo_or_folder(tmp_path):
    """Found in round 2: ``experiment --out /dev/null`` (as root) would have renamed a regular
    file over /dev/null. A FIFO stands in for the device here."""
    import os
    import stat

    from trm_lib.utils.io import atomic_path, atomic_write

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for target in (fifo, tmp_path):
        with pytest.raises(FileError, match=rf"^{target}: not a regular file; refusing"):
            with atomic_write(target) as fh:
                fh.write("x")
        with pytest.raises(FileError, match="not a regular file"):
            with atomic_path(target) as tmp:
                tmp.write_text("x")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo"]  # no temp file left


@pytest.mark.parametrize("what", ["fifo", "folder", "/dev/null"])
def test_experiment_out_that_is_no_file_is_one_error_before_anything(tmp_path, what):
    import os

    out = {"fifo": tmp_path / "fifo", "folder": tmp_path / "dir", "/dev/null": Path("/dev/null")}[
        what]
    if what == "fifo":
        os.mkfifo(out)
    elif what == "folder":
        out.mkdir()
    one_error(cli("experiment", "--out", out, TRM_RUNS=str(tmp_path / "runs")),
              f"--out {out}: not a regular file")
    assert not Path("/dev/.null.lock").exists() or what != "/dev/null"
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


TINY = {"data.dataset": "folder", "data.proportion": 0.5, "data.val_fraction": 0.25,
        "backbone.model": "TinyCLIP-RN", "backbone.pretrained": None,
        "backbone.image_size": 64, "train.epochs": 1, "train.batch_size": 16,
        "train.device": "cpu", "train.progress": False, "method.name": "linear_probe"}


def test_a_damaged_results_csv_is_one_error_and_kept(tmp_path):
    """Held: random bytes as the results CSV of an experiment are named, never overwritten."""
    world = fx.write_square_world(tmp_path / "w", 8, 4, 0)
    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps({"name": "s", "base": {**TINY, "data.root": str(world)},
                                "grids": {"a": {"methods": ["linear_probe"],
                                                "proportions": [0.5]}}}))
    csv = tmp_path / "bad.csv"
    junk = bytes(range(128, 256)) * 20
    csv.write_bytes(junk)
    one_error(cli("experiment", "--spec", spec, "--out", csv, "--runs-dir", tmp_path / "runs",
                  "--jobs", "1", TRM_CACHE=str(tmp_path / "cache")),
              f"{csv}: damaged results CSV")
    assert csv.read_bytes() == junk


def test_out_at_a_symlink_loop_is_one_error(tmp_path):
    """``--out`` naming a symlink that points to itself (was a FileExistsError traceback)."""
    world = fx.write_square_world(tmp_path / "w", 8, 4, 0)
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    sets = [a for k, v in {**TINY, "data.root": str(world)}.items()
            for a in ("--set", f"{k}={'null' if v is None else v}")]
    one_error(cli("train", *sets, "--out", loop, TRM_CACHE=str(tmp_path / "cache")),
              f"{loop}: cannot create the run folder")
