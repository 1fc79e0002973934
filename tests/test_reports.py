"""trm_lib.reports.driver: the papermill driver on throw-away notebooks, and the committed notebooks'
conventions (no outputs, one parameters cell with ``smoke`` and ``report_dir``)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import nbformat
import pytest

from trm_lib.reports import driver as reports
from trm_lib.reports import notebooks as notebook_files
from trm_lib.utils.paths import REPO_ROOT, notebooks_dir

PARAMS = 'smoke: bool = False  # tiny run\nreport_dir: str = ""  # artifacts go here\n'


def _notebook(path: Path, *cells: str, params: str = PARAMS) -> Path:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {path.stem}"), cell,
                *(nbformat.v4.new_code_cell(c) for c in cells)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


ALPHA = """
import json, os
from pathlib import Path
out = Path(report_dir)
(out / "tables" / "alpha.csv").write_text(f"n,smoke\\n{n},{smoke}\\n")
env = {k: os.environ.get(k) for k in ("MPLBACKEND", "SOURCE_DATE_EPOCH", "PYTHONHASHSEED")}
(out / "figures" / "alpha.json").write_text(json.dumps({"cwd": os.getcwd(), **env}))
print("alpha done")
"""
BETA = """
from pathlib import Path
(Path(report_dir) / "tables" / "beta.md").write_text("| a |\\n| --- |\\n| 1 |\\n")
"""


def _env() -> dict[str, str | None]:
    return {k: os.environ.get(k) for k in ("MPLBACKEND", "SOURCE_DATE_EPOCH", "PYTHONHASHSEED")}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Two notebooks run once into a report folder; the tests below read what they left."""
    root = tmp_path_factory.mktemp("report")
    nbs = root / "notebooks"
    _notebook(nbs / "01_alpha.ipynb", ALPHA, params=PARAMS + "n: int = 3  # rows\n")
    _notebook(nbs / "02_beta.ipynb", BETA)
    out = root / "reports"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "stale.png").write_bytes(b"left over")  # written by no recorded run
    lines: list[str] = []
    env_before = _env()
    runs = reports.run_notebooks(nbs, out, echo=lambda *a, **k: lines.append("".join(a)))
    return nbs, out, runs, lines, env_before


def test_run_writes_executed_copies_artifacts_and_index(project):
    nbs, out, runs, lines, _ = project
    assert [r.name for r in runs] == ["01_alpha", "02_beta"]
    assert [r.status for r in runs] == ["ok", "ok"]
    assert runs[0].artifacts == ["figures/alpha.json", "tables/alpha.csv"]
    assert runs[1].artifacts == ["tables/beta.md"]
    assert re.fullmatch(r"\[1/2\] 01_alpha \.\.\.", lines[0])
    assert re.fullmatch(r" done in \d+\.\d s \(2 artifacts\)", lines[1])
    executed = nbformat.read(out / "01_alpha.ipynb", as_version=4)
    assert executed.metadata["trm_report"]["artifacts"] == runs[0].artifacts
    assert executed.metadata["papermill"]["parameters"] == {"smoke": False,
                                                           "report_dir": str(out.resolve())}
    assert (out / "tables" / "alpha.csv").read_text() == "n,smoke\n3,False\n"

    index = (out / "README.md").read_text()
    assert "| [figures/alpha.json](figures/alpha.json) | 01_alpha |" in index
    assert "| [tables/beta.md](tables/beta.md) | 02_beta |" in index
    assert "| [figures/stale.png](figures/stale.png) | unknown" in index
    assert re.search(r"\| \[01_alpha\]\(01_alpha\.ipynb\) \| ok \| False \| \d+\.\d \| `", index)
    assert f"`{reports.git_revision()}`" in index
    # the sources are never written over
    assert not notebook_files.notebook_has_outputs(nbs / "01_alpha.ipynb")


def test_kernels_run_in_repo_root_with_the_report_environment(project):
    _, out, _, _, env_before = project
    seen = json.loads((out / "figures" / "alpha.json").read_text())
    assert Path(seen["cwd"]) == REPO_ROOT
    assert seen["MPLBACKEND"] == "Agg" and seen["PYTHONHASHSEED"] == "0"
    expected = os.environ.get("SOURCE_DATE_EPOCH") or reports._commit_epoch(REPO_ROOT)
    assert seen["SOURCE_DATE_EPOCH"] == expected
    assert _env() == env_before  # the driver's own environment is restored


def test_only_and_overrides_reach_the_notebook_and_keep_other_entries(project, capsys):
    nbs, out, _, _, _ = project
    beta_copy = out / "02_beta.ipynb"
    before = beta_copy.stat().st_mtime_ns
    rc = reports.cli(["--notebooks", str(nbs), "--out", str(out), "--only", "01",
                      "-p", "n=7", "--smoke"])
    assert rc == 0
    out_text = capsys.readouterr().out
    assert "01_alpha" in out_text
    # the driver ends with the report's wall time and each notebook's
    assert re.search(r"report time: \d+\.\d s wall \(01 \d+\.\d s\)\n$", out_text)
    assert (out / "tables" / "alpha.csv").read_text() == "n,smoke\n7,True\n"
    assert beta_copy.stat().st_mtime_ns == before  # not re-run
    index = (out / "README.md").read_text()
    assert "| [tables/beta.md](tables/beta.md) | 02_beta |" in index  # still credited
    assert re.search(r"\| \[01_alpha\]\(01_alpha\.ipynb\) \| ok \| True \|", index)
    # the HTML book is written after the notebooks and covers every executed copy, rerun or not
    book = out / "html" / "index.html"
    assert "html book: " in out_text and book.is_file()
    assert {"01_alpha.html", "02_beta.html", "tables/alpha.csv"} <= set(
        re.findall(r"href='([^']+)'", book.read_text()))
    assert book.stat().st_mtime_ns >= (out / "01_alpha.ipynb").stat().st_mtime_ns
    assert (out / "html" / "01_alpha.html").stat().st_mtime_ns >= (
        out / "01_alpha.ipynb").stat().st_mtime_ns


def test_strip_outputs_of_an_executed_copy(project, tmp_path):
    _, out, _, _, _ = project
    copy = tmp_path / "01_alpha.ipynb"
    copy.write_bytes((out / "01_alpha.ipynb").read_bytes())
    assert notebook_files.notebook_has_outputs(copy)
    assert notebook_files.strip_outputs(copy) is True
    assert not notebook_files.notebook_has_outputs(copy)
    nb = nbformat.read(copy, as_version=4)
    assert "papermill" not in nb.metadata and "trm_report" not in nb.metadata
    assert notebook_files.strip_outputs(copy) is False  # already clean: file untouched


def test_failure_stops_the_run_naming_notebook_and_cell(tmp_path, capsys):
    nbs = tmp_path / "notebooks"
    _notebook(nbs / "01_boom.ipynb", "x = 1", "y = x + 1\nz = y / 0")
    _notebook(nbs / "02_never.ipynb", "print('should not run')")
    out = tmp_path / "reports"
    rc = reports.cli(["--notebooks", str(nbs), "--out", str(out)])
    assert rc == 1
    captured = capsys.readouterr()
    assert "FAILED after" in captured.out
    # cell 4 of the source: markdown, parameters, "x = 1", then the failing one
    assert re.search(r"01_boom\.ipynb: cell 4 \(In \[\d+\]: y = x \+ 1\) raised "
                     r"ZeroDivisionError: division by zero", captured.err)
    assert not (out / "02_never.ipynb").exists()
    index = (out / "README.md").read_text()
    assert "| failed: ZeroDivisionError: division by zero |" in index


def test_bad_inputs_fail_before_any_kernel_starts(tmp_path):
    nbs = tmp_path / "notebooks"
    _notebook(nbs / "01_a.ipynb", "pass")
    out = tmp_path / "reports"
    with pytest.raises(reports.ReportError, match=r"-p typo: declared by none of"):
        reports.run_notebooks(nbs, out, parameters={"typo": 1})
    with pytest.raises(reports.ReportError, match=r"--only 07: no such notebook"):
        reports.run_notebooks(nbs, out, only=["07"])
    assert not out.exists() or not list(out.glob("*.ipynb"))

    _notebook(nbs / "02_b.ipynb", "pass", params="smoke = False\n")
    with pytest.raises(reports.ReportError, match=r"02_b\.ipynb: .*\['report_dir'\]"):
        reports.run_notebooks(nbs, out)
    (nbs / "02_b.ipynb").unlink()

    nb = nbformat.read(nbs / "01_a.ipynb", as_version=4)
    nb.cells[2].metadata["tags"] = ["parameters"]
    nbformat.write(nb, nbs / "01_a.ipynb")
    with pytest.raises(reports.ReportError, match=r"exactly one cell tagged 'parameters', found 2"):
        notebook_files.parameters_of(nbs / "01_a.ipynb")

    _notebook(nbs / "scratch.ipynb", "pass")
    with pytest.raises(reports.ReportError, match=r"NN_name\.ipynb.*scratch\.ipynb"):
        notebook_files.discover_notebooks(nbs)


def test_parameters_of_reads_names_types_and_help(tmp_path):
    path = _notebook(tmp_path / "01_a.ipynb", params=PARAMS + "n: int = 3  # rows\n")
    params = notebook_files.parameters_of(path)
    assert list(params) == ["smoke", "report_dir", "n"]
    assert params["n"] == {"type": "int", "default": "3", "help": "rows"}


def test_select_notebooks_by_number_or_name():
    paths = [Path("01_a.ipynb"), Path("02_b.ipynb"), Path("03_c.ipynb")]
    assert notebook_files.select_notebooks(paths, ["03", "01_a"]) == [paths[0], paths[2]]
    assert notebook_files.select_notebooks(paths, None) == paths


# ------------------------------------------------------------------------- committed notebooks
def test_notebooks_folder_follows_the_naming_rule():
    assert notebooks_dir().is_dir()
    notebook_files.discover_notebooks()  # raises on a misnamed notebook


@pytest.mark.parametrize("path", sorted(notebooks_dir().glob("*.ipynb")), ids=lambda p: p.name)
def test_committed_notebook_conventions(path):
    assert not notebook_files.notebook_has_outputs(path), (
        f"{path.name} holds outputs; run `python -m trm_lib report --strip` before committing")
    params = notebook_files.parameters_of(path)
    missing = [k for k in notebook_files.REQUIRED_PARAMETERS if k not in params]
    assert not missing, f"{path.name}: the parameters cell lacks {missing}"
    code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells
                     if c.cell_type == "code")
    assert "%matplotlib inline" in code, (
        f"{path.name}: add `%matplotlib inline` (kernels run with MPLBACKEND=Agg, so figures "
        "would not show in the executed copy)")


def test_kernel_environment_splits_the_threads_between_side_by_side_kernels(monkeypatch):
    """Two kernels with a full OpenMP pool each on two cores spin against each other."""
    kernel_environment = reports.kernel_environment
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    with kernel_environment(jobs=2) as env:
        assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "2"
        assert os.environ["OMP_NUM_THREADS"] == "2"
    assert "OMP_NUM_THREADS" not in os.environ and "MKL_NUM_THREADS" not in os.environ
    with kernel_environment(jobs=1) as env:
        assert "OMP_NUM_THREADS" not in env
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    with kernel_environment(jobs=2) as env:
        assert env["OMP_NUM_THREADS"] == "1"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's setting wins
    with kernel_environment(jobs=2) as env:
        assert "OMP_NUM_THREADS" not in env and os.environ["OMP_NUM_THREADS"] == "3"
