"""``python -m trm_lib explorer``: notebook 06's explorer as a web app (Voilà), on 127.0.0.1.

A course would rather hand students a page with the widgets than a JupyterLab with code cells.
Voilà runs ``notebooks/06_explorer.ipynb`` in a kernel and shows its outputs only -- tables,
figures and the live widgets, no code. The notebook's parameters are the app's: ``--smoke`` and
``-p key=value`` (``python -m trm_lib report --list`` shows them), injected by papermill into a
copy of the notebook, exactly as the report does.

Everything that can be checked before the server starts is checked, so a mistake is one
``error:`` line and exit status 2, not a traceback in a browser tab: an unknown parameter or
method, a value the notebook would refuse, a dataset or runs folder that is not there, a port
in use.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .serve import HOST, ServeError, check_folder, check_port

NOTEBOOK = "06_explorer.ipynb"
DEFAULT_PORT = 8866  # Voilà's own default


def explorer_parameters(smoke: bool, given: dict[str, Any]) -> dict[str, Any]:
    """The notebook's parameters for ``given`` (``-p`` values), checked as the notebook's setup
    cell checks them -- and the run config they make validated -- before any kernel starts."""
    from trm_lib.reports.driver import notebook_overrides
    from trm_lib.reports.explorer import METHODS, explorer_config
    from trm_lib.reports.notebooks import parameters_of
    from trm_lib.utils.paths import notebooks_dir

    declared = parameters_of(notebooks_dir() / NOTEBOOK)
    if "smoke" in given:
        raise ServeError("-p smoke: set by --smoke, not as a parameter")
    if "report_dir" in given:  # the app's figures are not a report's
        raise ServeError("-p report_dir: the app writes no report (a temporary folder)")
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise ServeError(f"-p {', '.join(unknown)}: not a parameter of {NOTEBOOK} (known: "
                         f"{', '.join(k for k in declared if k not in ('report_dir', 'smoke'))})")
    values = {name: _default(info["default"]) for name, info in declared.items()}
    values.update(given, smoke=smoke)
    if values["method"] not in METHODS:
        raise ServeError(f"-p method={values['method']}: unknown method (known: "
                         f"{', '.join(METHODS)})")
    if values["data_root"]:
        values["data_root"] = str(check_folder(values["data_root"], "-p data_root"))
    for key, ok, rule in (("proportion", lambda v: 0 < v <= 1, "in (0, 1]"),
                          ("epochs", lambda v: v >= 1, ">= 1"),
                          ("n_train", lambda v: v >= 0, ">= 0 (0: all)"),
                          ("n_test", lambda v: v >= 0, ">= 0 (0: all)"),
                          ("image", lambda v: v >= 0, ">= 0")):
        if not isinstance(values[key], int | float) or not ok(values[key]):
            raise ServeError(f"-p {key}={values[key]!r}: must be a number {rule}")
    size = {} if smoke else {"data.max_train": values["n_train"] or None,
                             "data.max_test": values["n_test"] or None}
    explorer_config(notebook_overrides(  # raises ConfigError naming the field
        smoke=smoke, dataset=values["dataset"], data_root=values["data_root"],
        model=values["model"], pretrained=values["pretrained"], device=values["device"],
        seed=values["seed"], epochs=values["epochs"],
        overrides={"data.proportion": float(values["proportion"]),
                   "method.name": values["method"], **size}))
    return {k: v for k, v in values.items() if k in declared}


def _default(text: str) -> Any:
    """A default as written in the parameters cell (``0.1``, ``"trm_ml"``, ``[0.1, 0.5]``)."""
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def voila_command(notebook: Path, port: int) -> list[str]:
    """The Voilà server for ``notebook`` on 127.0.0.1:``port`` (no browser, no other port)."""
    return [sys.executable, "-m", "voila", str(notebook), "--no-browser", f"--port={port}",
            f"--Voila.ip={HOST}", "--Voila.port_retries=0", "--strip_sources=True",
            "--show_tracebacks=True"]


def voila_environment(runs_dir: Path | None) -> dict[str, str]:
    """The kernel's environment: this checkout first on PYTHONPATH, offline, headless; the
    runs folder as ``TRM_RUNS`` (the explorer keeps its runs in ``<runs>/explorer``)."""
    from trm_lib.reports.browser import lab_environment

    env = lab_environment({"TRM_RUNS": str(runs_dir)} if runs_dir else None)
    env["TQDM_DISABLE"] = "1"  # closed progress-bar widgets would show "model not found"
    for var in ("OMP_NUM_THREADS", "PYTHONHASHSEED"):  # a user's app uses the machine's threads
        if var in os.environ:
            env[var] = os.environ[var]
        else:
            env.pop(var, None)
    return env


def prepare_app(folder: Path, parameters: dict[str, Any]) -> Path:
    """A copy of notebook 06 in ``folder`` with ``parameters`` injected (papermill's way)."""
    from trm_lib.reports.browser import prepare_notebooks

    return prepare_notebooks(folder, [NOTEBOOK], parameters)[0]


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def cli(argv: list[str]) -> int:
    """Check the input, then serve the explorer with Voilà until Ctrl+C."""
    from trm_lib.config.run_config import parse_overrides

    p = argparse.ArgumentParser(prog="python -m trm_lib explorer",
                                description="Notebook 06's explorer as a web app (Voilà: "
                                            "widgets and figures, no code cells) on 127.0.0.1.")
    p.add_argument("--smoke", action="store_true", help="tiny world, random weights (seconds)")
    p.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a parameter of notebooks/06_explorer.ipynb (YAML value), repeatable; "
                        "e.g. -p method=dualcoop -p proportion=0.3")
    p.add_argument("--runs-dir", help="folder of the run folders (default: TRM_RUNS or runs/); "
                                      "the explorer's runs go to <runs-dir>/explorer")
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"port (default {DEFAULT_PORT}; 0: any free port)")
    args = p.parse_args(argv)
    runs = check_folder(args.runs_dir, "--runs-dir") if args.runs_dir else None
    params = explorer_parameters(args.smoke, parse_overrides(args.param))
    port = check_port(args.port)
    work = Path(tempfile.mkdtemp(prefix="trm-explorer-"))
    try:
        params["report_dir"] = str(work / "report")  # the notebook's saved figures: not kept
        notebook = prepare_app(work, params)
        print(f"explorer: http://{HOST}:{port}/ (Voilà; Ctrl+C stops it)", flush=True)
        proc = subprocess.Popen(voila_command(notebook, port), env=voila_environment(runs),
                                cwd=str(work))
        signal.signal(signal.SIGTERM, _interrupt)  # a `kill` stops Voilà and its kernels too
        try:
            code = proc.wait()
        except KeyboardInterrupt:
            proc.terminate()
            code = proc.wait()
        if code not in (0, -2, -15):
            raise ServeError(f"the Voilà server stopped with exit status {code} (its log is "
                             f"above)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


__all__ = ["DEFAULT_PORT", "NOTEBOOK", "cli", "explorer_parameters", "prepare_app",
           "voila_command", "voila_environment"]
