"""A report folder under the run-folder discipline (issue 29, item 3): one writer at a time, and
a failed notebook never replaces a good executed one.

- :func:`report_lock`: ``<report>/.report.lock`` is held while notebooks run; a second
  ``report`` into the same folder says so in one line and waits (two ``report --only 01`` used
  to interleave and both exit 0, leaving the last finisher's files mixed with the other's).
- :class:`Attempt`: one notebook's run as a transaction. Papermill writes the executed copy to a
  hidden temporary file beside the final one; before the kernel starts, the artifact files
  are copied into a hidden backup folder (a report's figures and tables are a few MB). On success
  the copy is renamed into place (atomic) and the files the previous good run wrote but this one
  did not are removed, so the index never lists stale figures. On failure the notebook's
  changed files are restored from the backup and the failed copy is kept as
  ``NN_name.failed.ipynb`` beside the good one (it becomes the executed copy only when there is
  no good one), so a bad parameter never costs the last good report.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from trm_lib.utils.locks import waiting_lock

FAILED_SUFFIX = ".failed.ipynb"


@contextlib.contextmanager
def report_lock(out: Path, say: Callable[[str], None]) -> Iterator[None]:
    """Hold the report folder's lock; a second writer says so in one line, then waits."""
    with waiting_lock(out / ".report.lock", f"report folder {out}",
                      f"{out}: another report is running into this folder; waiting for it", say):
        yield


def failed_copy(output: Path) -> Path:
    """Where a failed run's executed copy is kept beside a good one."""
    return output.with_name(output.stem + FAILED_SUFFIX)


class Attempt:
    """One notebook's run into ``out`` (see the module docstring): :attr:`scratch` is where
    papermill writes; :meth:`commit` or :meth:`roll_back` ends it."""

    def __init__(self, out: Path, name: str, artifact_dirs: Sequence[str]):
        self.out, self.output = out, out / f"{name}.ipynb"
        self.scratch = out / f".{name}.running-{os.getpid()}.ipynb"
        self.backup = out / f".{name}.backup-{os.getpid()}"
        shutil.rmtree(self.backup, ignore_errors=True)
        for sub in artifact_dirs:
            for path in (out / sub).rglob("*"):
                if path.is_file() and not path.name.startswith("."):
                    dst = self.backup / path.relative_to(out)
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, dst)  # a copy: a hard link shares in-place writes

    def commit(self, artifacts: Sequence[str], previous: Sequence[str]) -> Path:
        """Rename the executed copy into place; remove what the previous good run wrote that
        this one did not (``previous``: its recorded artifacts); drop a stale failed copy."""
        os.replace(self.scratch, self.output)
        for rel in sorted(set(previous) - set(artifacts)):
            (self.out / rel).unlink(missing_ok=True)
        failed_copy(self.output).unlink(missing_ok=True)
        self._drop()
        return self.output

    def roll_back(self, changed: Sequence[str]) -> Path:
        """Restore the files the failed run changed from the backup (removing those it
        created); its executed copy goes to ``NN_name.failed.ipynb`` when a good copy exists,
        else into place. Returns where the failed copy is."""
        for rel in changed:
            saved = self.backup / rel
            if saved.exists():
                os.replace(saved, self.out / rel)
            else:
                (self.out / rel).unlink(missing_ok=True)
        dest = failed_copy(self.output) if self.output.exists() else self.output
        if self.scratch.exists():
            os.replace(self.scratch, dest)
        self._drop()
        return dest

    def _drop(self) -> None:
        shutil.rmtree(self.backup, ignore_errors=True)
        self.scratch.unlink(missing_ok=True)


def recorded_artifacts(output: Path, meta_key: str) -> list[str]:
    """The artifacts an executed copy's run record lists (none for a missing/damaged copy)."""
    import nbformat

    with contextlib.suppress(Exception):
        meta: Any = nbformat.read(output, as_version=4).metadata.get(meta_key) or {}
        return [str(a) for a in meta.get("artifacts", [])]
    return []


__all__ = ["Attempt", "FAILED_SUFFIX", "failed_copy", "recorded_artifacts", "report_lock"]
