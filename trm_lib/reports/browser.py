"""The notebooks as a user sees them: JupyterLab in headless Chromium, driven by Playwright.

Used by the ``browser`` tests (``tests/test_browser.py``) and by ``python -m trm_lib report
--browser`` (screenshots of the live explorer), so both drive the page the same way.

- :func:`missing` says in one line why no browser session can start (no ``playwright`` package,
  no Chromium) — the tests skip with it, or fail under ``CI=true``.
- :func:`prepare_notebooks` copies notebooks into a folder with their ``parameters`` cell
  injected by papermill (``smoke=True``, a report folder, ...): the copy a user opens runs the
  smoke world without anyone editing a cell.
- :func:`lab_server` starts ``jupyter lab`` on a free localhost port with a random token and a
  private config/settings/workspace folder (every cell kept in the DOM) and the project's lab
  settings (:data:`LAB_SETTINGS_DIR`: no news pop-up, no update check); :func:`chromium` starts Chromium (``/usr/bin/chromium``; ``playwright install`` downloads
  a browser and is never needed) headless with a fresh profile and no background networking.
- :class:`LabPage` opens a notebook, runs all cells from the Run menu and waits for the kernel;
  :class:`ExplorerPage` reads and moves the explorer widget of notebook 06.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trm_lib.utils.paths import REPO_ROOT, notebooks_dir

__all__ = ["CHROMIUM_ARGS", "LAB_SETTINGS_DIR", "ExplorerPage", "LabPage", "LabServer", "chromium", "chromium_path",
           "explorer_screenshots", "free_port", "lab_environment", "lab_server", "missing",
           "prepare_notebooks"]

#: Chromium flags: headless in a container as root, and quiet on a closed network (without the
#: networking flags it keeps retrying update, sync and QUIC connections)
CHROMIUM_ARGS = ("--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync")
#: the project's JupyterLab settings (``overrides.json``: no "get notified about Jupyter news?"
#: pop-up, no update check), served by every lab this module starts (``app_settings_dir``) and
#: installed into the environment by ``make install``
LAB_SETTINGS_DIR = Path(__file__).resolve().parent / "lab_settings"
#: JupyterLab user settings of a test session: every cell in the DOM (windowing would drop
#: off-screen cells, whose outputs the checks read)
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
}
#: timeouts in milliseconds; the machine may be slow and shared, so they are generous
SLOW_MS = 600_000


def chromium_path() -> str | None:
    """The Chromium binary: ``$TRM_CHROMIUM``, else ``/usr/bin/chromium``, else ``chromium`` on
    PATH; None when there is none."""
    for candidate in (os.environ.get("TRM_CHROMIUM"), "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file():
            return candidate
    return shutil.which("chromium")


def missing() -> str | None:
    """One line saying why a browser session cannot start here, or None when it can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    if chromium_path() is None:
        return "no Chromium at /usr/bin/chromium (apt-get install chromium, or set TRM_CHROMIUM)"
    return None


def free_port() -> int:
    """A TCP port free on localhost right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare_notebooks(dest: str | os.PathLike, names: Sequence[str],
                      parameters: Mapping[str, Any]) -> list[Path]:
    """Copy ``notebooks/<name>`` into ``dest`` with ``parameters`` injected after the
    ``parameters`` cell (papermill's own injection; each notebook gets the ones it declares)."""
    import nbformat
    from papermill import inspect_notebook
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for name in names:
        src = notebooks_dir() / name
        # papermill's own inspection (not reports.parameters_of: reports imports this module)
        declared = inspect_notebook(str(src))
        nb = parameterize_notebook(load_notebook_node(str(src)),
                                   {k: v for k, v in parameters.items() if k in declared})
        path = dest / name
        nbformat.write(nb, path)
        out.append(path)
    return out


def lab_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of the lab server and its kernels: this checkout first on PYTHONPATH,
    offline, headless matplotlib, one thread per kernel, plus ``extra`` (e.g. TRM_CACHE)."""
    env = dict(os.environ)
    path = [str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])]
    env.update({"PYTHONPATH": os.pathsep.join(path), "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg",
                "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
                "PYTHONHASHSEED": "0"})
    env.update(extra or {})
    return env


@dataclass
class LabServer:
    url: str  # http://127.0.0.1:PORT
    token: str
    root: Path  # the folder it serves
    process: subprocess.Popen
    log: Path

    def notebook_url(self, name: str) -> str:
        return f"{self.url}/lab/tree/{name}?token={self.token}"

    def log_tail(self, n: int = 40) -> str:
        lines = self.log.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])


def _write_settings(folder: Path) -> None:
    for plugin, values in LAB_SETTINGS.items():
        path = folder / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


@contextlib.contextmanager
def lab_server(root: str | os.PathLike, env: Mapping[str, str] | None = None,
               timeout: float = 300.0) -> Iterator[LabServer]:
    """``jupyter lab`` serving ``root`` on a free localhost port with a random token; stopped
    (and its kernels with it) on exit. ``env``: the full environment (default
    :func:`lab_environment`). Raises RuntimeError with the server's log when it does not come
    up within ``timeout`` seconds."""
    import secrets

    private = Path(tempfile.mkdtemp(prefix="trm-lab-"))
    token, port = secrets.token_hex(16), free_port()
    env = dict(env if env is not None else lab_environment())
    for var, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_RUNTIME_DIR", "runtime"),
                     ("JUPYTERLAB_SETTINGS_DIR", "settings"),
                     ("JUPYTERLAB_WORKSPACES_DIR", "workspaces")):
        env[var] = str(private / sub)
        (private / sub).mkdir()
    _write_settings(private / "settings")
    log = private / "server.log"
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
           "--ip=127.0.0.1", f"--port={port}", f"--ServerApp.token={token}",
           "--ServerApp.password=", f"--ServerApp.root_dir={Path(root).resolve()}",
           "--LabApp.news_url=", "--ServerApp.port_retries=0",
           f"--LabApp.app_settings_dir={LAB_SETTINGS_DIR}",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                cwd=str(root), start_new_session=True)
    server = LabServer(f"http://127.0.0.1:{port}", token, Path(root).resolve(), proc, log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {proc.returncode}:\n"
                                   f"{server.log_tail()}")
            try:
                with urllib.request.urlopen(f"{server.url}/api/status?token={token}",
                                            timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"jupyter lab not up after {timeout:.0f} s:\n"
                                   f"{server.log_tail()}")
            time.sleep(0.5)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        shutil.rmtree(private, ignore_errors=True)


@contextlib.contextmanager
def chromium(viewport: tuple[int, int] = (1400, 1000)) -> Iterator[Any]:
    """A headless Chromium context (Playwright ``BrowserContext``) on a fresh profile folder,
    removed on exit. Raises RuntimeError with :func:`missing`'s reason when none can start."""
    reason = missing()
    if reason:
        raise RuntimeError(f"no browser: {reason}")
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="trm-chromium-")
    try:
        with sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(
                profile, executable_path=chromium_path(), headless=True,
                args=list(CHROMIUM_ARGS),
                viewport={"width": viewport[0], "height": viewport[1]})
            try:
                yield ctx
            finally:
                ctx.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


# --------------------------------------------------------------------------------------- pages
class LabPage:
    """One notebook open in JupyterLab: run all cells through the UI and read what shows."""

    def __init__(self, page: Any, server: LabServer, name: str):
        self.page, self.server, self.name = page, server, name
        self.errors: list[str] = []  # JavaScript errors of the page
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    def open(self, timeout_ms: int = SLOW_MS) -> LabPage:
        """Load the notebook and wait until its kernel is idle (a Run All sent earlier is
        lost)."""
        page = self.page
        page.goto(self.server.notebook_url(self.name), wait_until="domcontentloaded",
                  timeout=timeout_ms)
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=timeout_ms)
        page.locator(".jp-StatusBar-TextItem", has_text="| Idle").first.wait_for(
            timeout=timeout_ms)
        return self

    def run_all(self) -> None:
        """Run → Run All Cells, from the menu bar, as a user would."""
        self.page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        self.page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()

    def wait_executed(self, timeout_ms: int = SLOW_MS) -> None:
        """Wait until no code cell is queued or running and the kernel is idle, twice in a row
        a second apart (a Run All stopped by an error leaves the later cells unnumbered:
        :meth:`save` and read the file to see which)."""
        self.page.wait_for_function(
            """() => {
              const cells = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell')];
              const prompts = cells.map(c => ((c.querySelector('.jp-InputPrompt') || {})
                                              .textContent || '').trim());
              const idle = [...document.querySelectorAll('.jp-StatusBar-TextItem')]
                .some(e => e.textContent.includes('| Idle'));
              const done = idle && prompts.some(p => /\\[\\d+\\]/.test(p))
                && !prompts.some(p => p.includes('*'));
              const was = window.__trmDone || 0;
              window.__trmDone = done ? was + 1 : 0;
              return window.__trmDone >= 2;
            }""", timeout=timeout_ms, polling=1000)

    def save(self, timeout_ms: int = 120_000) -> Any:
        """Save the notebook with Ctrl+S, as a user would, and return the file as read back
        from disk (nbformat), once it holds the executed cells."""
        import nbformat

        path = Path(self.server.root) / self.name
        before = path.stat().st_mtime_ns
        self.page.locator(".jp-Notebook").first.click(position={"x": 5, "y": 5})
        self.page.keyboard.press("Control+s")
        deadline = time.monotonic() + timeout_ms / 1000
        while path.stat().st_mtime_ns == before:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path}: not saved within {timeout_ms / 1000:.0f} s")
            time.sleep(0.5)
        time.sleep(1.0)  # the server writes atomically, but let it finish renaming
        return nbformat.read(path, as_version=4)

    def rendered_images(self) -> list[int]:
        """naturalWidth of every image in the cells' outputs (0: did not load)."""
        return self.page.eval_on_selector_all(
            ".jp-OutputArea-output img", "els => els.map(e => e.naturalWidth)")


#: the explorer widget of notebook 06 (the vertical box that holds the proportion slider)
_EXPLORER = ("() => [...document.querySelectorAll('.jp-OutputArea-output .widget-vbox')]"
             ".filter(b => b.innerText.includes('label proportion p')).pop()")


class ExplorerPage:
    """The live explorer of notebook 06 in an open :class:`LabPage`: read its status line,
    metrics table, true-label line and figure, and move its controls like a user."""

    def __init__(self, lab: LabPage):
        self.lab, self.page = lab, lab.page
        self.ui = (self.page.locator(".jp-OutputArea-output .widget-vbox")
                   .filter(has_text="label proportion p").last)

    def wait_ready(self, timeout_ms: int = SLOW_MS) -> None:
        """Wait for the widget area, a loaded figure and a finished status line."""
        self.ui.wait_for(timeout=timeout_ms)
        self.wait_status(None, timeout_ms)

    def wait_status(self, previous: str | None, timeout_ms: int = SLOW_MS) -> str:
        """Wait until the status line is final (not "…updating") and differs from ``previous``,
        and the figure has loaded; returns the new status."""
        self.page.wait_for_function(
            f"""(prev) => {{
              const box = ({_EXPLORER})();
              if (!box) return false;
              const st = box.querySelectorAll('.widget-html')[1];
              const img = box.querySelector('img');
              const text = st ? st.innerText.trim() : '';
              return text && !text.includes('…') && text !== prev && img && img.naturalWidth > 0;
            }}""", arg=previous, timeout=timeout_ms, polling=500)
        return self.status()

    def status(self) -> str:
        return self.ui.locator(".widget-html").nth(1).inner_text().strip()

    def truth(self) -> str:
        return self.ui.locator(".widget-html").first.inner_text().strip()

    def table(self) -> dict[str, dict[str, str]]:
        """The metrics table as ``{run label: {column: cell text}}``."""
        rows = self.page.evaluate(
            f"""() => {{
              const t = ({_EXPLORER})().querySelector('table.trm-explorer-table');
              const head = [...t.querySelectorAll('thead th')].map(th => th.innerText.trim());
              return [...t.querySelectorAll('tbody tr')].map(tr =>
                Object.fromEntries([...tr.querySelectorAll('td')]
                  .map((td, i) => [head[i], td.innerText.trim()])));
            }}""")
        return {r["run"]: r for r in rows}

    def visited(self) -> dict[str, dict[str, str]]:
        """The visited-settings table as ``{run label: {column: cell text}}``."""
        rows = self.page.evaluate(
            f"""() => {{
              const t = ({_EXPLORER})().querySelector('table.trm-explorer-visited');
              if (!t) return [];
              const head = [...t.querySelectorAll('thead th')].map(th => th.innerText.trim());
              return [...t.querySelectorAll('tbody tr')].map(tr =>
                Object.fromEntries([...tr.querySelectorAll('td')]
                  .map((td, i) => [head[i], td.innerText.trim()])));
            }}""")
        return {r["run"]: r for r in rows}

    def figure_png(self) -> bytes:
        """The bytes of the figure the page shows (read back from the image's blob URL)."""
        data = self.page.evaluate(
            f"""async () => {{
              const img = ({_EXPLORER})().querySelector('img');
              const blob = await (await fetch(img.src)).blob();
              return await new Promise(ok => {{
                const r = new FileReader(); r.onload = () => ok(r.result);
                r.readAsDataURL(blob); }});
            }}""")
        return base64.b64decode(data.split(",", 1)[1])

    # ---------------------------------------------------------------------------- controls
    def _slider(self, description: str) -> Any:
        return self.ui.locator(".widget-slider", has_text=description).first

    def step_slider(self, description: str, key: str = "ArrowRight") -> None:
        """Focus a slider's handle and press an arrow key (one step)."""
        handle = self._slider(description).locator(".noUi-handle").first
        handle.focus()
        self.page.keyboard.press(key)

    def type_slider(self, description: str, value: str) -> None:
        """Type ``value`` into a slider's editable readout and press Enter."""
        readout = self._slider(description).locator(".widget-readout").first
        readout.click()
        self.page.keyboard.press("Control+A")
        self.page.keyboard.type(value)
        self.page.keyboard.press("Enter")

    def click_checkbox(self, description: str) -> None:
        self.ui.locator(".widget-checkbox", has_text=description).locator("input").first.click()

    def checkbox_checked(self, description: str) -> bool:
        return self.ui.locator(".widget-checkbox", has_text=description).locator(
            "input").first.is_checked()

    def screenshot(self, path: str | os.PathLike) -> Path:
        """A PNG of the widget area (as a user sees it)."""
        self.ui.scroll_into_view_if_needed()
        self.ui.screenshot(path=str(path))
        return Path(path)


# ------------------------------------------------------------------------------ report shots
def explorer_screenshots(out_dir: str | os.PathLike, parameters: Mapping[str, Any],
                         env: Mapping[str, str] | None = None,
                         echo: Any = print) -> list[Path]:
    """Open notebook 06 in JupyterLab (with ``parameters`` injected), run it through the UI, and
    save the explorer as a user sees it: at its first setting, and after one step of the
    label-proportion slider. Files ``06_explorer_browser_*.png`` in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="trm-browser-"))
    try:
        prepare_notebooks(work, ["06_explorer.ipynb"], parameters)
        with lab_server(work, env=lab_environment(env)) as server, chromium() as ctx:
            lab = LabPage(ctx.pages[0] if ctx.pages else ctx.new_page(), server,
                          "06_explorer.ipynb").open()
            lab.run_all()
            explorer = ExplorerPage(lab)
            explorer.wait_ready()
            shots = [explorer.screenshot(out_dir / "06_explorer_browser_first.png")]
            before = explorer.status()
            explorer.step_slider("label proportion p")
            explorer.wait_status(before)
            shots.append(explorer.screenshot(out_dir / "06_explorer_browser_next_p.png"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for shot in shots:
        echo(f"screenshot: {shot}")
    return shots
