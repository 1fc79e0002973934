"""Test-wide settings: offline, headless, and a private cache/runs folder per session so tests
never read or write the user's ``.cache/`` or ``runs/`` (set TRM_CACHE / TRM_RUNS to override)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
_SESSION_DIR = tempfile.mkdtemp(prefix="trm-tests-")
atexit.register(shutil.rmtree, _SESSION_DIR, ignore_errors=True)
os.environ.setdefault("TRM_CACHE", os.path.join(_SESSION_DIR, "cache"))
os.environ.setdefault("TRM_RUNS", os.path.join(_SESSION_DIR, "runs"))
