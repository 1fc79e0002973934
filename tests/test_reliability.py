"""Faults done on purpose: each one must end in one clear line naming the file, lose nothing,
and leave the right numbers (docs/RELIABILITY.md lists them with their outcome)."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys

import pytest

from trm_lib.io import DiskFullError, FileError, atomic_path, atomic_write, read_json
from trm_lib.locks import LockedError, file_lock


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
        code = ("import sys; from trm_lib.locks import file_lock, LockedError\n"
                "try:\n    with file_lock(sys.argv[1], blocking=False): pass\n"
                "except LockedError: sys.exit(3)\n")
        assert subprocess.run([sys.executable, "-c", code, str(lock)]).returncode == 3
    with file_lock(lock, blocking=False):  # released when the block ends
        pass
    assert subprocess.run([sys.executable, "-c", code, str(lock)]).returncode == 0
