"""The two web apps in headless Chromium, started by their commands as a user starts them:
``python -m trm_lib tensorboard`` shows a real run's scalar chart, and ``python -m trm_lib
explorer`` (notebook 06 in Voilà) redraws its figure when the label-proportion slider moves.

Chromium is driven as in ``tests/test_browser.py`` (:mod:`trm_lib.reports.browser`); without
Playwright or Chromium these tests skip with the reason, under ``CI=true`` they fail."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from test_browser import _assert_figure  # the page's figure == the library's, up to rounding
from test_train import make_world, tiny_config

pytestmark = [pytest.mark.browser]

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def chrome():
    from trm_lib.reports import browser

    with browser.chromium() as ctx:
        yield ctx


@contextlib.contextmanager
def command(argv: list[str], url: str, env: dict[str, str], timeout: float = 300.0):
    """``python -m trm_lib <argv>`` in its own process group until ``url`` answers; then the
    whole group (server and kernels) is stopped."""
    proc = subprocess.Popen([sys.executable, "-m", "trm_lib", *argv], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert proc.poll() is None, f"{argv[0]} exited: {proc.stdout.read()}"
            try:
                with urllib.request.urlopen(url, timeout=5):
                    break
            except urllib.error.HTTPError:  # it answers
                break
            except OSError:
                assert time.monotonic() < deadline, f"{argv[0]} not up after {timeout:.0f} s"
                time.sleep(0.3)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", **extra}


def test_tensorboard_shows_a_real_runs_loss_chart(tmp_path, chrome, monkeypatch):

    from trm_lib.reports.browser import free_port
    from trm_lib.train import train

    monkeypatch.setenv("TRM_CACHE", str(tmp_path / "cache"))
    cfg = tiny_config(make_world(tmp_path / "world"), **{"train.epochs": 2})
    run = train(cfg, tmp_path / "runs" / "tiny-run", log=None).out_dir
    hist = pd.read_csv(run / "history.csv").set_index("epoch")
    port = free_port()
    t0 = time.perf_counter()
    with command(["tensorboard", "--runs-dir", str(tmp_path / "runs"), "--port", str(port)],
                 f"http://127.0.0.1:{port}/data/runs", _env()):
        page = chrome.new_page()
        page.goto(f"http://127.0.0.1:{port}/#timeseries", wait_until="domcontentloaded")
        page.get_by_role("combobox", name="Filter tags (regex)").fill("loss/total")
        card = page.locator("scalar-card", has_text="loss/total").first
        card.wait_for(timeout=60_000)
        assert card.locator("canvas, svg").count() > 0  # the line chart
        row = card.locator("tb-data-table-content-row", has_text="tiny-run").first
        row.wait_for(timeout=60_000)
        cells = [c.strip() for c in row.inner_text().split("\t") if c.strip()]
        # Run, Smoothed, Value, Step, Relative: the value at the shown step is the history's
        value, step = float(cells[2]), int(cells[3])
        assert step in (1, 2)
        assert value == pytest.approx(hist.loc[step, "loss"], rel=2e-3), cells
        page.close()
    print(f"[browser] tensorboard chart of a real run: {time.perf_counter() - t0:.1f} s")


def test_voila_explorer_redraws_its_figure_when_the_slider_moves(tmp_path, chrome):
    from trm_lib.reports import driver as reports
    from trm_lib.reports.browser import ExplorerPage, free_port
    from trm_lib.reports.explorer import Explorer, explorer_config, figure_png

    runs = tmp_path / "runs"
    runs.mkdir()
    # the notebook's tour kept to runs the live view needs anyway; the library trains them
    # here (a loaded CI machine keeps the page's own work short), the page reads them back
    params = ["proportion=0.5", "tour_proportions=[0.5]", "tour_thresholds=[0.9]"]
    explorer = Explorer(explorer_config(reports.notebook_overrides(
        smoke=True, epochs=4, overrides={"data.proportion": 0.5, "method.name": "trm_ml"})),
        runs_root=runs / "explorer")
    first = {"proportion": 0.5, "method": "trm_ml"}
    explorer.figure(0, **first)
    nxt = {"proportion": 0.6, "method": "trm_ml"}  # where one step of the slider goes
    explorer.compare([{**first, "pseudo": False}, nxt, {**nxt, "method": "dualcoop"}])
    port = free_port()
    argv = ["explorer", "--smoke", *[a for p in params for a in ("-p", p)], "--runs-dir",
            str(runs), "--port", str(port)]
    t0 = time.perf_counter()
    with command(argv, f"http://127.0.0.1:{port}/api/status", _env()):
        page = chrome.new_page()
        page.set_default_timeout(60_000)
        page.goto(f"http://127.0.0.1:{port}/", wait_until="domcontentloaded")
        ui = ExplorerPage(type("VoilaPage", (), {"page": page})())
        ui.wait_ready(timeout_ms=60_000)
        print(f"[browser] voila page with the explorer: {time.perf_counter() - t0:.1f} s")
        text = page.inner_text("body")  # outputs only: no source of a code cell
        assert "build_widgets(explorer" not in text and "import Explorer" not in text
        status, before = ui.status(), ui.figure_png()
        _assert_figure(before, figure_png(explorer.figure(0, **first)))
        ui.step_slider("label proportion p")  # one step right: p 50% -> 60%
        status = ui.wait_status(status, timeout_ms=60_000)
        assert status.startswith("TRM-ML, p=60%"), status
        after = ui.figure_png()
        assert after != before, "the figure did not change"
        _assert_figure(after, figure_png(explorer.figure(0, **nxt)))
        page.close()
    print(f"[browser] voila explorer, slider moved: {time.perf_counter() - t0:.1f} s")
