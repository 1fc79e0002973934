"""Every command of ``python -m trm_lib`` answers a user's mistake with one ``error:`` line on
stderr and exit status 2 (``trm_lib.__main__``); ``--debug`` / ``TRM_DEBUG=1`` show the
traceback. Each case runs the real command line in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from trm_lib.__main__ import COMMANDS, main, one_line
from trm_lib.utils.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], tmp: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "TRM_DEBUG"}
    environ.update(PYTHONPATH=str(ROOT), TRM_CACHE=str(tmp / "cache"), TRM_RUNS=str(tmp / "runs"),
                   HF_HUB_OFFLINE="1", MPLBACKEND="Agg", **env)
    return subprocess.run([sys.executable, "-m", "trm_lib", *args], capture_output=True,
                          text=True, env=environ, cwd=tmp, timeout=300)


# (command line, a fragment the one line must contain); {tmp} is the test's temp folder
CASES = [
    (["train", "--set", "train.epochs=abc"], "train.epochs must be an integer"),
    (["train", "--set", "method.name=nosuch"], "method.name"),
    (["train", "--config", "{tmp}/bad.yaml"], "not valid YAML"),
    (["evaluate", "--run", "{tmp}/no_run"], "no_run/best.pt: no checkpoint"),
    (["evaluate", "--run", "{tmp}/bad_run"], "bad_run/best.pt: damaged or not a checkpoint"),
    (["experiment", "--preset", "nosuch"], "unknown grid preset 'nosuch'"),
    (["synth", "--image-size", "7", "--quiet"], "image_size"),
    (["pretrain", "--positives", "everything", "--no-eval"], "positives"),
    (["features", "--dataset", "nosuch"], "dataset 'nosuch' unknown (known: folder, synthscenes"),
    (["report", "--only", "nosuch"], "--only nosuch: no such notebook"),
    (["course", "--grade", "{tmp}/missing.ipynb"], "no such notebook"),
    (["bench", "nosuch"], "unknown benchmark 'nosuch'"),
    (["bench", "train", "--model", "nosuch"], "'nosuch' is not an open_clip model config"),
    (["cache", "--root", "{tmp}/no_cache"], "no_cache: no such cache folder"),
    (["tensorboard", "--runs-dir", "{tmp}/no_runs"], "no_runs: no such folder"),
    (["explorer", "-p", "method=nosuch"], "-p method=nosuch: unknown method"),
    (["experiment", "--executor", "slurm", "--slurm-time", "soon"], "slurm time 'soon'"),
    (["nosuch"], "unknown command 'nosuch'"),
]


def test_every_command_has_a_bad_input_case():
    assert {args[0] for args, _ in CASES} >= set(COMMANDS)


@pytest.mark.parametrize(("args", "fragment"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_input_is_one_error_line_and_status_2(tmp_path, args, fragment):
    (tmp_path / "bad.yaml").write_text("train: {epochs: [1\n")
    (tmp_path / "bad_run").mkdir()
    (tmp_path / "bad_run" / "best.pt").write_bytes(bytes(range(256)) * 4)  # garbage
    proc = _run([a.format(tmp=tmp_path) for a in args], tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert fragment in lines[0]


def test_debug_shows_the_traceback(tmp_path):
    proc = _run(["train", "--set", "train.epochs=abc", "--debug"], tmp_path)
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    assert "ConfigError: train.epochs must be an integer" in proc.stderr


def test_trm_debug_lets_the_error_through_and_bugs_always_do(monkeypatch, capsys):
    assert main(["train", "--set", "method.name=nosuch"]) == 2
    assert capsys.readouterr().err.startswith("error: method.name")
    monkeypatch.setenv("TRM_DEBUG", "1")
    with pytest.raises(ConfigError, match="method.name"):
        main(["train", "--set", "method.name=nosuch"])
    monkeypatch.delenv("TRM_DEBUG")
    monkeypatch.setitem(COMMANDS, "boom", ("trm_lib.__main__", "no_such_function", ""))
    with pytest.raises(AttributeError):  # a bug in the package is not the user's mistake
        main(["boom"])


def test_one_line_joins_a_multi_line_message():
    assert one_line(ConfigError("a\n  b\n")) == "error: a; b"
