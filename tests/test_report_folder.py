"""Report folders under the run-folder discipline (issue 29, item 3; ``trm_lib.reports.folder``):
two reports into one folder take turns, a failed notebook never replaces a good executed copy
nor its figures, and the index never lists figures no recorded run wrote last."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from test_reports import PARAMS, _notebook

from trm_lib.reports import driver as reports
from trm_lib.reports.notebooks import ReportError

REPO = Path(__file__).resolve().parents[1]

# writes figures/NN.txt (and figures/extra.txt unless only_one), then fails when boom
WRITER = """
import os, time
from pathlib import Path
out = Path(report_dir)
(out / "figures" / "one.txt").write_text(f"{tag} {os.getpid()}")
if not only_one:
    (out / "figures" / "extra.txt").write_text(tag)
time.sleep(pause)
if boom:
    raise ValueError("bad parameter")
"""
WRITER_PARAMS = PARAMS + ('tag: str = "good"\nboom: bool = False\nonly_one: bool = False\n'
                          'pause: float = 0.0\n')


def _project(tmp_path: Path) -> tuple[Path, Path]:
    nbs = tmp_path / "notebooks"
    _notebook(nbs / "01_writer.ipynb", WRITER, params=WRITER_PARAMS)
    return nbs, tmp_path / "reports"


def _quiet(*args, **kwargs) -> None:
    pass


def test_a_failed_notebook_never_replaces_a_good_one(tmp_path, capsys):
    nbs, out = _project(tmp_path)
    reports.run_notebooks(nbs, out, echo=_quiet)
    good = (out / "01_writer.ipynb").read_bytes()
    rc = reports.cli(["--notebooks", str(nbs), "--out", str(out), "-p", "boom=true",
                      "-p", "tag=bad"])
    assert rc == 1
    err = capsys.readouterr().err
    assert f"executed copy with the traceback: {out / '01_writer.failed.ipynb'}" in err
    assert (out / "01_writer.ipynb").read_bytes() == good  # the good copy is untouched
    assert (out / "figures" / "one.txt").read_text().startswith("good ")  # rolled back
    assert (out / "figures" / "extra.txt").read_text() == "good"
    failed = nbformat.read(out / "01_writer.failed.ipynb", as_version=4)
    assert failed.metadata["trm_report"]["status"] == "failed"
    index = (out / "README.md").read_text()
    assert "| [01_writer](01_writer.ipynb) | ok |" in index
    assert "01_writer.failed.ipynb) | last attempt failed: ['ValueError: bad parameter']" in index
    assert "| [figures/one.txt](figures/one.txt) | 01_writer |" in index
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.name != ".report.lock"]
    # a later success replaces the copy and drops the failed one
    reports.run_notebooks(nbs, out, echo=_quiet, parameters={"tag": "again"})
    assert not (out / "01_writer.failed.ipynb").exists()
    assert "failed" not in (out / "README.md").read_text()


def test_a_first_run_that_fails_leaves_its_copy_and_no_figures(tmp_path):
    nbs, out = _project(tmp_path)
    rc = reports.cli(["--notebooks", str(nbs), "--out", str(out), "-p", "boom=true"])
    assert rc == 1
    assert (out / "01_writer.ipynb").exists() and not (out / "01_writer.failed.ipynb").exists()
    assert not list((out / "figures").iterdir())  # nothing a failed run wrote is kept
    assert "| [01_writer](01_writer.ipynb) | failed: ValueError" in (out / "README.md").read_text()


def test_the_index_never_lists_a_figure_the_last_good_run_did_not_write(tmp_path):
    nbs, out = _project(tmp_path)
    reports.run_notebooks(nbs, out, echo=_quiet)
    assert (out / "figures" / "extra.txt").exists()
    reports.run_notebooks(nbs, out, echo=_quiet, parameters={"only_one": True})
    assert not (out / "figures" / "extra.txt").exists()
    assert "extra.txt" not in (out / "README.md").read_text()


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1"}


def test_two_reports_into_one_folder_take_turns(tmp_path):
    """Two ``report --only 01`` processes into one folder: the second says in one line that it
    waits; both exit 0, and the files left are one run's (its figure, its executed copy)."""
    nbs, out = _project(tmp_path)
    procs = [subprocess.Popen([sys.executable, "-m", "trm_lib", "report", "--notebooks",
                               str(nbs), "--out", str(out), "--only", "01", "--jobs", "1",
                               "-p", f"tag={tag}", "-p", "pause=3"],
                              env=_env(), text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for tag in ("first", "second")]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    waited = [o for o, _ in outs if "another report is running into this folder; waiting" in o]
    assert len(waited) == 1, outs
    tag, pid = (out / "figures" / "one.txt").read_text().split()
    executed = nbformat.read(out / "01_writer.ipynb", as_version=4)
    assert executed.metadata["papermill"]["parameters"]["tag"] == tag
    assert executed.metadata["papermill"]["output_path"] == str(out.resolve() / "01_writer.ipynb")


@pytest.mark.parametrize(("param", "option"), [("report_dir", "--out"), ("smoke", "--smoke")])
def test_report_dir_and_smoke_are_not_parameters(tmp_path, param, option):
    """Found in round 2: ``-p report_dir=/elsewhere`` wrote the figures outside the report
    folder, out of its lock and index (exit 0, index "(none)")."""
    nbs, out = _project(tmp_path)
    with pytest.raises(ReportError, match=rf"-p {param}: set by {option}"):
        reports.run_notebooks(nbs, out, echo=_quiet,
                              parameters={param: str(tmp_path / "elsewhere")})
    assert not (tmp_path / "elsewhere").exists() and not out.exists()
