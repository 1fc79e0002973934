"""The side-by-side schedule of ``python -m trm_lib report --jobs N``: which notebook waits for
which, who is credited with a file, and the scheduler loop on stand-in notebooks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trm_lib.reports import schedule as rs

ROOT = Path(__file__).resolve().parents[1]

NBS = [Path(f"notebooks/{n}") for n in ("01_data.ipynb", "02_train.ipynb", "03_grid.ipynb",
                                         "04_ablations.ipynb", "05_maps.ipynb", "06_explorer.ipynb",
                                         "07_new.ipynb")]


def _names(paths):
    return [p.name[:2] for p in paths]


def test_dependencies_follow_the_shared_run_folders():
    deps = rs.dependencies(NBS)
    assert {p.name[:2]: _names(d) for p, d in deps.items()} == {
        "01": [], "02": [], "03": ["02"], "04": ["02", "03"], "05": ["02", "03"], "06": [],
        "07": ["01", "02", "03", "04", "05", "06"]}  # an unknown notebook waits for all before
    # a --only selection waits only for the selected notebooks
    only = [NBS[2], NBS[4]]
    assert {p.name[:2]: _names(d) for p, d in rs.dependencies(only).items()} == {
        "03": [], "05": ["03"]}


def test_ready_keeps_run_order():
    deps = rs.dependencies(NBS[:6])
    assert _names(rs.ready(NBS[:6], set(), deps)) == ["01", "02", "06"]
    assert _names(rs.ready(NBS[2:6], {NBS[0], NBS[1]}, deps)) == ["03", "06"]
    assert _names(rs.ready(NBS[3:5], {NBS[1], NBS[2]}, deps)) == ["04", "05"]


def test_credited_leaves_files_of_other_running_notebooks_out():
    changed = ["figures/02_curves.png", "figures/06_explorer_view.png", "tables/shared.csv"]
    assert rs.credited(changed, "02", {"06"}) == ["figures/02_curves.png", "tables/shared.csv"]
    assert rs.credited(changed, "06", {"02"}) == ["figures/06_explorer_view.png",
                                                   "tables/shared.csv"]
    assert rs.credited(changed, "02", set()) == changed  # alone: everything it changed


def _loop(paths, jobs, errors=()):
    """run_side_by_side on stand-ins: each 'notebook' sleeps 0.3 s in a worker process."""
    events, finished = [], []

    def execute(src, pool):
        events.append(("start", src.name[:2], time.perf_counter()))
        if src.name[:2] in errors:
            return pool.submit(dict, ename="ZeroDivisionError", evalue="division by zero")
        return pool.submit(time.sleep, 0.3)

    def finish(src, seconds, artifacts, error):
        events.append(("end", src.name[:2], time.perf_counter()))
        finished.append(src.name[:2])
        return type("Run", (), {"artifacts": artifacts})(), (RuntimeError(src.name) if error
                                                              else None)

    lines = []
    rs.run_side_by_side(paths, jobs, execute, dict, lambda a, b: [], finish,
                        lambda *a, **k: lines.append("".join(a)))
    return events, finished, lines


def test_run_side_by_side_respects_dependencies_and_the_pool_size():
    events, finished, lines = _loop(NBS[:6], jobs=2)
    assert sorted(finished) == ["01", "02", "03", "04", "05", "06"]
    at = {(kind, n): t for kind, n, t in events}
    for after, before in (("03", "02"), ("04", "03"), ("05", "03")):
        assert at[("start", after)] >= at[("end", before)]
    running, most = 0, 0
    for kind, _, _ in sorted(events, key=lambda e: e[2]):
        running += 1 if kind == "start" else -1
        most = max(most, running)
    assert most == 2  # two at once, never more
    assert lines[0] == "[1/6] 01_data started" and lines[1] == "[2/6] 02_train started"
    assert sum("done in" in line for line in lines) == 6


def test_a_failure_stops_new_notebooks_and_is_raised():
    with pytest.raises(RuntimeError, match="02_train"):
        _loop(NBS[:6], jobs=2, errors=("02",))
    events = []

    # 01 and 02 start together; 02 fails; nothing depending on it (or after it) starts
    def execute(src, pool):
        events.append(src.name[:2])
        return pool.submit(dict, ename="E", evalue="v") if src.name[:2] == "02" else \
            pool.submit(time.sleep, 0.5)

    def finish(src, seconds, artifacts, error):
        return type("Run", (), {"artifacts": []})(), RuntimeError(src.name) if error else None

    with pytest.raises(RuntimeError):
        rs.run_side_by_side(NBS[:6], 2, execute, dict, lambda a, b: [], finish,
                            lambda *a, **k: None)
    assert "03" not in events and "05" not in events


def test_the_report_driver_never_holds_torch(tmp_path):
    """Parameter checks and the shared prerequisites run in single-use children, so the driver
    (alive for the whole report) stays torch-free -- ~0.6 GB less beside the kernels -- while
    the smoke world's feature stores it asked for exist afterwards and the notebooks ran."""
    code = (
        "import sys\n"
        "from trm_lib.reports import driver\n"
        f"rc = driver.cli(['--smoke', '--only', '01,06', '--out', {str(tmp_path / 'rep')!r}])\n"
        "print(rc, 'torch' in sys.modules)\n")
    env = {**os.environ, "TRM_CACHE": str(tmp_path / "cache"), "TRM_RUNS": str(tmp_path / "runs"),
           "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "0 False"
    assert list((tmp_path / "cache").rglob("manifest.json")), "no feature store was built"
    assert (tmp_path / "rep" / "06_explorer.ipynb").is_file()
