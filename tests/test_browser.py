"""The notebooks in a real browser: JupyterLab in headless Chromium (Playwright), smoke world.

Notebook copies get ``smoke=True`` and a temporary report folder injected into their
``parameters`` cell (papermill's injection, :func:`trm_lib.reports.browser.prepare_notebooks`), a lab
server serves them with a token, and the tests act as a user: Run All from the menu, then move
the explorer's controls. After every action the page must show something new, and exactly what
the library computes for that setting: the metrics table's cells against
:meth:`trm_lib.reports.explorer.Explorer.table`, the figure's PNG bytes against
:func:`trm_lib.reports.explorer.figure_png` of :meth:`~trm_lib.reports.explorer.Explorer.figure` — computed here,
in the test process, from the run folders the notebook's kernel trained.

Without Playwright or Chromium these tests skip with the reason (tests/conftest.py); under
``CI=true`` they fail instead.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import math
import os
import time

import numpy as np
import pytest
from PIL import Image

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NOTEBOOKS = ["05_attention_maps.ipynb", "06_explorer.ipynb"]
START = {"proportion": 0.1, "method": "trm_ml"}  # notebook 06's defaults


@pytest.fixture(scope="module")
def chrome():
    """One headless Chromium context for the module (Playwright's sync API runs one at a time)."""
    from trm_lib.reports import browser

    with browser.chromium() as ctx:
        yield ctx


@pytest.fixture(scope="module")
def lab(tmp_path_factory, chrome):
    """A lab server on copies of notebooks 05 and 06 (smoke), and the Chromium context."""
    from trm_lib.reports import browser

    root = tmp_path_factory.mktemp("lab")
    report = root / "report"
    browser.prepare_notebooks(root / "notebooks", NOTEBOOKS,
                              {"smoke": True, "report_dir": str(report)})
    # the kernels share the test session's private cache and runs folder (tests/conftest.py),
    # so the library here reads back the runs the notebook trained
    env = browser.lab_environment({k: os.environ[k] for k in ("TRM_CACHE", "TRM_RUNS")})
    t0 = time.perf_counter()
    with browser.lab_server(root / "notebooks", env=env) as server:
        print(f"\n[browser] lab server up in {time.perf_counter() - t0:.1f} s")
        yield server, chrome, report
        print(f"[browser] lab server log tail:\n{server.log_tail(10)}")


def _open(lab, name):
    from trm_lib.reports import browser

    server, ctx, _ = lab
    page = ctx.new_page()
    page.set_default_timeout(browser.SLOW_MS)
    return browser.LabPage(page, server, name).open()


def _cell(value: float) -> str:
    """How the explorer's HTML table writes a number (pandas to_html, na_rep '–')."""
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else \
        f"{value:.2f}"


METRIC_COLUMNS = ("mAP", "CF1", "OF1", "mAP (oracle)", "pseudo precision", "pseudo recall",
                  "pseudo coverage")


def _assert_table(shown: dict[str, dict[str, str]], expected) -> None:
    assert set(shown) == set(expected.index), (sorted(shown), list(expected.index))
    for label, row in expected.iterrows():
        for col in METRIC_COLUMNS:
            assert shown[label][col] == _cell(row[col]), (label, col, shown[label][col], row[col])


def _assert_figure(png: bytes, expected: bytes) -> None:
    """The page's figure is the library's: identical bytes, or (should float rounding of a
    different thread count move a pixel) the same image up to a few pixels."""
    if hashlib.sha256(png).digest() == hashlib.sha256(expected).digest():
        return
    a = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)
    b = np.asarray(Image.open(io.BytesIO(expected)).convert("RGB"), dtype=np.int16)
    assert a.shape == b.shape, f"figure size {a.shape} on the page, {b.shape} from the library"
    differing = (np.abs(a - b).max(-1) > 8).mean()
    assert differing < 1e-3, f"{differing:.2%} of the figure's pixels differ from the library's"


def controls_of(state: dict) -> dict:
    return {k: v for k, v in state.items() if k != "image"}


def test_explorer_acts_like_the_library(lab):
    from trm_lib.reports import driver as reports
    from trm_lib.reports.explorer import Explorer, explorer_config, figure_png

    t0 = time.perf_counter()
    page = _open(lab, "06_explorer.ipynb")
    page.run_all()
    from trm_lib.reports.browser import ExplorerPage

    ui = ExplorerPage(page)
    ui.wait_ready()
    print(f"[browser] 06 opened, run all, explorer shown: {time.perf_counter() - t0:.1f} s")

    # the library's view of the same settings (the notebook's parameters cell, smoke)
    explorer = Explorer(explorer_config(reports.notebook_overrides(
        smoke=True, epochs=4, overrides={"data.proportion": 0.1, "method.name": "trm_ml"})))
    state = {**dataclasses.asdict(explorer.setting(**START)), "image": 0}

    def check(status: str, previous_png: bytes | None) -> bytes:
        controls = {k: v for k, v in state.items() if k != "image"}
        _assert_table(ui.table(), explorer.table(**controls))
        png = ui.figure_png()
        _assert_figure(png, figure_png(explorer.figure(state["image"], **controls)))
        if previous_png is not None:
            assert png != previous_png, "the figure did not change"
        labels = ", ".join(explorer.image_labels(state["image"])) or "none"
        assert ui.truth() == f"true labels: {labels}"
        assert status.startswith(f"{explorer.setting(**controls).label()}, image "
                                 f"{state['image']}:"), status
        # its scale beside the numbers, and the settings visited so far with the zero-shot floor
        assert status.endswith(f"· {explorer.scale(**controls)}"), status
        visited = ui.visited()
        row = visited[explorer.setting(**controls).label()]
        assert row["mAP"] == ui.table()[explorer.setting(**controls).label()]["mAP"]
        assert row["seeds"] == "0" and row["± sd"] == "–" and row["below zero-shot"] in (
            "no", "⚠ yes"), row
        return png

    status = ui.status()
    png = check(status, None)

    # 1) the label-proportion slider: one step right (10% -> 20%), from the keyboard
    ui.step_slider("label proportion p")
    state["proportion"] = 0.2
    status = ui.wait_status(status)
    png = check(status, png)

    # 2) an ablation switch: knowledge distillation off
    assert ui.checkbox_checked("knowledge distillation")
    ui.click_checkbox("knowledge distillation")
    state["kd"] = False
    status = ui.wait_status(status)
    assert not ui.checkbox_checked("knowledge distillation")
    png = check(status, png)

    # 3) the pseudo-positive threshold, typed into the slider's readout: a new run, shown in
    # the table (with the default soft pseudo-labels the thresholds only define the
    # precision/recall readout, so the maps, and the figure, may stay the same)
    before = set(ui.table())
    ui.type_slider("pseudo-positive", "0.8")
    state["pseudo_high"] = 0.8
    status = ui.wait_status(status)
    png = check(status, None)
    assert "pseudo(0.80/" in status and set(ui.table()) != before
    # soft pseudo-labels: the run of 0.90 is reused, its threshold statistics are not shown
    assert "not recomputed" in status, status
    assert ui.table()[explorer.setting(**controls_of(state)).label()]["pseudo precision"] == "–"

    # 4) another test image for the attention view
    table = ui.table()
    ui.type_slider("test image", "5")
    state["image"] = 5
    status = ui.wait_status(status)
    png = check(status, png)
    assert ui.table() == table, "picking an image must not change the runs"

    assert explorer.trained == [], "the library retrained a setting the page had trained"
    page.wait_executed()
    saved = page.save()
    errors = [o for c in saved.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors, errors[0].get("evalue") if errors else None
    assert not page.errors, page.errors
    print(f"[browser] 06 with four user actions: {time.perf_counter() - t0:.1f} s")


def test_attention_notebook_renders_its_figures(lab):
    t0 = time.perf_counter()
    page = _open(lab, "05_attention_maps.ipynb")
    page.run_all()
    page.wait_executed()
    saved = page.save()
    code = [c for c in saved.cells if c.cell_type == "code"]
    errors = [f"{o.ename}: {o.evalue}" for c in code for o in c.outputs
              if o.output_type == "error"]
    assert not errors, f"05 shows error output: {errors}"
    assert all(c.execution_count for c in code), "Run All did not reach every code cell"
    figures = sum("image/png" in o.get("data", {}) for c in code for o in c.outputs)
    assert figures >= 1
    widths = page.rendered_images()
    assert len(widths) == figures and all(w > 0 for w in widths), widths
    assert (lab[2] / "tables" / "05_pointing_game.csv").exists()
    assert not page.errors, page.errors
    print(f"[browser] 05 run through the UI: {figures} figures rendered, "
          f"{time.perf_counter() - t0:.1f} s")


def test_html_book_links_and_images_load(tmp_path, chrome):
    """The book's index from a local HTTP server: every link answers 200, every image loads."""
    import subprocess
    import sys
    import urllib.request

    from test_book import make_report  # tests/ is on sys.path (rootdir conftest)

    from trm_lib.reports import browser
    from trm_lib.reports import driver as reports

    index = reports.write_book(make_report(tmp_path / "report"))
    port = browser.free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind",
                               "127.0.0.1", "--directory", str(index.parent)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "/", timeout=2)
                break
            except OSError:
                time.sleep(0.2)
        page = chrome.new_page()
        failed, remote = [], []  # offline: nothing may fail, nothing may leave the server
        page.on("requestfailed", lambda r: failed.append(f"{r.url}: {r.failure}"))
        page.on("request", lambda r: None if r.url.startswith((base, "data:")) else
                remote.append(r.url))
        assert page.goto(f"{base}/index.html").status == 200
        page.wait_for_load_state("load")
        links = page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
        images = page.eval_on_selector_all(
            "img", "els => els.map(e => [e.src, e.complete && e.naturalWidth])")
        assert len(links) == 7 and len(images) == 1
        for url in links:
            assert page.request.get(url).status == 200, url
        assert all(width > 0 for _, width in images), images
        for url in (u for u in links if u.endswith(".html")):
            assert page.goto(url).status == 200
            page.wait_for_load_state("load")
            assert page.locator(".jp-Notebook, #notebook, body").first.inner_text()
        # a reader's view of a notebook page: the long log folded, code hidden at one click
        page.goto(f"{base}/01_first.html")
        code = page.locator(".jp-CodeCell .jp-Cell-inputWrapper").first
        log = page.locator("details.trm-log pre").first
        assert code.is_visible() and not log.is_visible()
        page.locator("details.trm-log summary").first.click()
        assert log.is_visible()
        page.locator("#trm-hide-code").check()
        assert not code.is_visible()
        assert page.locator(".jp-MarkdownCell").first.is_visible()  # the text stays
        assert not failed and not remote, (failed, remote)
    finally:
        server.terminate()
        server.wait(timeout=30)


# -------------------------------------------------------------------------------- course mode
COURSE_NB = "release/01_data_and_masking/01_data_and_masking.ipynb"


@pytest.fixture(scope="module")
def course_lab(tmp_path_factory, chrome):
    """A lab server on an nbgrader course folder (``python -m trm_lib course``'s layout, built
    from notebook 01 cut to its exercises, as tests/test_course.py does), started in that folder
    as a teacher would, so nbgrader's Validate button finds ``nbgrader_config.py``."""
    from test_course import _short_notebook

    from trm_lib.reports import browser, course

    root = tmp_path_factory.mktemp("course_lab")
    course.build(root / "course", notebooks=_short_notebook(root / "notebooks"))
    with browser.lab_server(root / "course", env=browser.lab_environment()) as server:
        yield server, chrome


def _cell_with(page, text):
    return page.locator(".jp-Notebook .jp-CodeCell").filter(has_text=text).first


def _run_test_cell(page, name, answer):
    """Replace the answer cell of exercise ``name`` with ``answer`` (as typed text), run it and
    its locked test cell with Shift+Enter, and return the test cell's output text."""
    cell = _cell_with(page, f"def {name}(")
    cell.locator(".cm-content").click()
    page.keyboard.press("Control+A")
    page.keyboard.insert_text(answer)
    page.keyboard.press("Shift+Enter")  # runs the answer, selects the test cell
    page.keyboard.press("Shift+Enter")  # runs the test cell
    test = _cell_with(page, f'course.check("{name}"')
    out = test.locator(".jp-OutputArea-output").first
    out.wait_for(timeout=120_000)
    page.wait_for_function("([el]) => /[✓✗]/.test(el.innerText)", arg=[out.element_handle()],
                           timeout=120_000)
    return out.inner_text()


def test_student_sees_fail_then_pass_and_validate_fails_a_blank_copy(course_lab):
    from trm_lib.reports import browser

    server, ctx = course_lab
    page = ctx.new_page()
    page.set_default_timeout(browser.SLOW_MS)
    lab = browser.LabPage(page, server, COURSE_NB).open()
    # the project's lab settings: no "get notified about Jupyter news?" pop-up
    page.wait_for_timeout(3000)
    assert not page.locator(".Toastify__toast", has_text="news").count()
    notif = page.request.get(f"{server.url}/lab/api/settings/@jupyterlab/apputils-extension:"
                             f"notification?token={server.token}").json()
    assert notif["settings"].get("fetchNews", notif["schema"]["properties"]["fetchNews"][
        "default"]) == "false"

    # nbgrader's Validate button on the untouched student copy: it fails
    page.locator(".jp-Toolbar-item .jp-ToolbarButtonComponent", has_text="Validate").first.click()
    dialog = page.locator(".jp-Dialog", has_text="Validation Results")
    dialog.wait_for(timeout=300_000)
    body = dialog.inner_text()
    assert "The following cell failed:" in body and "not answered yet" in body, body
    assert dialog.locator(".validation-failed").count() == 1
    dialog.locator("button", has_text="Ok").first.click()

    wrong = ("import numpy as np\n\n\ndef protocol_a_mask(Y, p, rng):\n"
             "    return np.where(rng.random(Y.shape) < p, 0, Y).astype(np.int8)\n")
    shown = _run_test_cell(page, "protocol_a_mask", wrong)
    assert shown.startswith("✗ protocol_a_mask: case 'seed 0: "), shown
    right = wrong.replace("< p, 0, Y)", "< p, Y, 0)")
    shown = _run_test_cell(page, "protocol_a_mask", right)
    assert shown.startswith("✓ protocol_a_mask: all "), shown
    assert not lab.errors, lab.errors
