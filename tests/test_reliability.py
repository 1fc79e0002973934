"""Faults done on purpose: each one must end in one clear line naming the file, lose nothing,
and leave the right numbers (docs/RELIABILITY.md lists them with their outcome)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from trm_lib.utils.io import DiskFullError, FileError, atomic_path, atomic_write, read_json
from trm_lib.utils.locks import LockedError, file_lock


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# ---------------------------------------------------------------------------------------------
# Atomic writes and the file lock
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_atomic_files_get_the_umasks_mode(tmp_path, mask):
    old = os.umask(mask)
    try:
        with atomic_write(tmp_path / "a.txt") as fh:
            fh.write("x")
        with atomic_path(tmp_path / "b.bin") as tmp:
            tmp.write_bytes(b"y")
        open(tmp_path / "plain", "w").close()
    finally:
        os.umask(old)
    want = _mode(tmp_path / "plain")
    assert want == 0o666 & ~mask
    assert _mode(tmp_path / "a.txt") == want and _mode(tmp_path / "b.bin") == want


def test_atomic_path_fsyncs_before_the_rename(tmp_path, monkeypatch):
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"),
                                                      real_replace(a, b))[1])
    with atomic_path(tmp_path / "c.bin") as tmp:
        tmp.write_bytes(b"z")
    # the file before the rename, then its folder after it
    assert events == ["fsync", "replace", "fsync"]
    assert (tmp_path / "c.bin").read_bytes() == b"z"


@pytest.mark.parametrize("how", ["write", "path"])
def test_simulated_disk_full_names_the_file_and_leaves_nothing(tmp_path, monkeypatch, how):
    (tmp_path / "keep.txt").write_text("old")
    target = tmp_path / "keep.txt"

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    if how == "write":
        with pytest.raises(DiskFullError, match=f"no space left on {tmp_path}"):
            with atomic_write(target) as fh:
                monkeypatch.setattr(fh, "write", full)
                fh.write("new")
    else:
        with pytest.raises(DiskFullError, match=f"no space left on {tmp_path}"):
            with atomic_path(target) as tmp:
                full(tmp)
    assert target.read_text() == "old"  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]  # no temp left


@pytest.mark.parametrize("content", [b"", b"{\"a\": 1", os.urandom(64)])
def test_damaged_json_names_the_file(tmp_path, content):
    path = tmp_path / "result.json"
    path.write_bytes(content)
    with pytest.raises(FileError, match=str(path)):
        read_json(path)


def test_file_lock_excludes_and_fails_fast(tmp_path):
    lock = tmp_path / "sub" / ".lock"
    with file_lock(lock):
        with pytest.raises(LockedError, match=r"run folder X is in use by another process"):
            with file_lock(lock, blocking=False, what="run folder X"):
                pass
        # another process sees the same lock
        code = ("import sys; from trm_lib.utils.locks import file_lock, LockedError\n"
                "try:\n    with file_lock(sys.argv[1], blocking=False): pass\n"
                "except LockedError: sys.exit(3)\n")
        assert subprocess.run([sys.executable, "-c", code, str(lock)]).returncode == 3
    with file_lock(lock, blocking=False):  # released when the block ends
        pass
    assert subprocess.run([sys.executable, "-c", code, str(lock)]).returncode == 0


# ---------------------------------------------------------------------------------------------
# Feature stores
# ---------------------------------------------------------------------------------------------

def _mount(*args: str) -> bool:
    """Run mount(8) where the sandbox allows it (root, mount present); False otherwise."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@contextlib.contextmanager
def read_only_view(folder):
    """``folder`` seen through a read-only bind mount (chmod does not stop root), or, where
    mount is not allowed, the same folder with every write-open refused as on a read-only
    filesystem (EROFS) by a patched ``os.open`` / ``os.mkdir`` -- the fallback is a simulation."""
    view = folder.parent / f"{folder.name}-ro"
    view.mkdir()
    if _mount("--bind", str(folder), str(view)):
        try:
            if _mount("-o", "remount,bind,ro", str(view)):
                yield view, "mount"
                return
        finally:
            subprocess.run(["umount", "-l", str(view)], check=True)  # lazy: memmaps may be open
    view.rmdir()
    real_open, real_mkdir = os.open, os.mkdir
    inside = str(folder)

    def ro_open(path, flags, *args, **kwargs):
        if str(path).startswith(inside) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kwargs)

    def ro_mkdir(path, *args, **kwargs):
        if str(path).startswith(inside) and not os.path.isdir(path):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_mkdir(path, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "open", ro_open)
        mp.setattr(os, "mkdir", ro_mkdir)
        yield folder, "simulated"


TINY_RN = {"embed_dim": 16, "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8,
                                           "head_width": 64},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2,
                        "layers": 1}}


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    import torch

    from trm_lib.backbone.clip import FrozenCLIP, register_model_configs

    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("configs")
    (folder / "rel-RN.json").write_text(json.dumps(TINY_RN))
    register_model_configs(folder)
    return FrozenCLIP("rel-RN", batch_size=4)


def _images(root, n=6, seed=0):
    from trm_lib.datasets import read_generic, write_generic

    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True)
    rel = []
    for i in range(n):
        rel.append(f"img/{i}.png")
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(root / rel[-1])
    write_generic(root, "train", rel, np.where(rng.random((n, 3)) < 0.5, 1, -1), ["a", "b", "c"])
    return read_generic(root, "train")


@pytest.fixture()
def store(backbone, tmp_path):
    from trm_lib.backbone.features import compute_features

    dataset = _images(tmp_path / "data")
    return compute_features(backbone, dataset, cache_root=tmp_path / "cache", progress=False), \
        dataset


@pytest.mark.parametrize("garbage", ["finite", "nan"])
def test_garbage_in_a_store_is_detected_and_recomputed(backbone, store, capsys, garbage):
    """Bytes of dense.npy replaced (header kept): opening refuses it naming the file and rows;
    compute_features warns once and recomputes the right numbers."""
    from trm_lib.backbone.features import FeatureCacheError, FeatureStore, compute_features

    good, dataset = store
    want = np.array(good.dense)
    path = good.path / "dense.npy"
    offset = path.stat().st_size - want.nbytes
    junk = (np.random.default_rng(1).standard_normal(want.size).astype(np.float16)
            if garbage == "finite" else np.full(want.size, np.nan, np.float16))
    with open(path, "r+b") as fh:
        fh.seek(offset + 2 * want[0].size)  # keep row 0, replace the rest
        fh.write(junk[want[0].size:].tobytes())
    nan = ", holding NaN/inf" if garbage == "nan" else ""
    with pytest.raises(FeatureCacheError) as err:
        FeatureStore(good.path)
    assert str(err.value).startswith(f"{path}: rows 0..5 do not match their checksum{nan}")
    capsys.readouterr()
    again = compute_features(backbone, dataset, cache_root=good.path.parent.parent,
                             progress=False)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"warning: {path}: rows 0..5 do not match")
    assert f"recomputing the feature store {good.path}" in lines[0]
    np.testing.assert_array_equal(again.dense, want)


def test_a_rewritten_image_is_not_served_stale_features(backbone, store):
    """Same file name, same labels, new pixels: a new key, so the row is recomputed."""
    from trm_lib.backbone.features import compute_features
    from trm_lib.datasets import read_generic

    old, dataset = store
    image = dataset.image_paths[2]
    Image.fromarray(np.full((40, 48, 3), 200, np.uint8)).save(image)
    st = image.stat()
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # coarse-mtime filesystems
    fresh = compute_features(backbone, read_generic(dataset.root, "train"),
                             cache_root=old.path.parent.parent, progress=False)
    assert fresh.path != old.path
    assert not np.array_equal(fresh.dense[2], old.dense[2])
    np.testing.assert_array_equal(fresh.dense[[0, 1, 3, 4, 5]], old.dense[[0, 1, 3, 4, 5]])


def test_a_complete_read_only_cache_is_usable(backbone, store, capsys):
    from trm_lib.backbone.features import compute_features

    good, dataset = store
    cache = good.path.parent.parent
    (good.path / ".lock").unlink()
    with read_only_view(cache) as (view, how):
        got = compute_features(backbone, dataset, cache_root=view, progress=False)
        np.testing.assert_array_equal(got.dense, good.dense)
        assert not (good.path / ".lock").exists(), how  # the lock was never opened
    assert capsys.readouterr().err == ""


def test_an_empty_read_only_cache_is_one_error_naming_trm_cache(backbone, store, tmp_path,
                                                                monkeypatch):
    from trm_lib.backbone.features import FeatureCacheError, compute_features

    _, dataset = store
    empty = tmp_path / "empty-cache"
    empty.mkdir()
    with read_only_view(empty) as (view, how):
        monkeypatch.setenv("TRM_CACHE", str(view))
        with pytest.raises(FeatureCacheError) as err:
            compute_features(backbone, dataset, progress=False)
    msg = str(err.value)
    assert "\n" not in msg and "set TRM_CACHE to a writable folder" in msg, how
    assert str(view / "features") in msg and "Read-only file system" in msg


@pytest.mark.parametrize("where", ["reserve", "rows"])
def test_simulated_disk_full_under_the_cache(backbone, tmp_path, monkeypatch, where):
    """ENOSPC when the arrays are reserved or when rows are written: one error naming the
    folder, and no store left behind (not even a half one)."""
    from trm_lib.backbone.features import compute_features

    dataset = _images(tmp_path / "data")
    cache = tmp_path / "cache"

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate" if where == "reserve" else "pwrite", full)
    with pytest.raises(DiskFullError, match=f"no space left on {cache / 'features'}/[0-9a-f]+ "):
        compute_features(backbone, dataset, cache_root=cache, progress=False)
    assert not any((cache / "features").iterdir())


def test_a_tiny_tmpfs_cache_fills_up_cleanly(backbone, tmp_path):
    """The real thing where the sandbox can mount: a 64 KiB tmpfs is too small for the store
    (64 images x 4 tokens x 256 raw dims in float16 = 128 KiB)."""
    from trm_lib.backbone.features import compute_features

    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if not _mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)):
        pytest.skip("cannot mount a tmpfs here (the simulated ENOSPC test covers this)")
    try:
        dataset = _images(tmp_path / "data", n=64)
        with pytest.raises(DiskFullError, match=f"no space left on {mnt / 'features'}"):
            compute_features(backbone, dataset, cache_root=mnt, progress=False, raw=True)
        assert not any((mnt / "features").iterdir())
        small = compute_features(backbone, dataset.subset(range(4)), cache_root=mnt,
                                 progress=False)  # what fits still works
        assert len(small) == 4
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)
