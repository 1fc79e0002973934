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


def pytest_runtest_setup(item):
    """``browser`` tests need Playwright and Chromium: without them they skip with the reason,
    except under ``CI=true``, where a missing browser fails the test instead of hiding it."""
    import pytest

    if item.get_closest_marker("browser") is None:
        return
    from trm_lib.reports.browser import missing

    reason = missing()
    if reason:
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(f"CI=true, but the browser tests cannot run: {reason}", pytrace=False)
        pytest.skip(f"browser tests: {reason}")
