"""The ``tensorboard`` and ``explorer`` commands check their input before a server starts: a
mistake is one ``error:`` line and exit status 2, and nothing listens afterwards."""

from __future__ import annotations

import socket

import pytest

from trm_lib import __main__ as cli
from trm_lib.tools import explorer, serve, tensorboard


@pytest.fixture
def busy_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def _error(argv, capsys) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("argv, message", [
    (["explorer", "-p", "method=nope"], "-p method=nope: unknown method (known: trm_ml"),
    (["explorer", "-p", "methd=trm_ml"], "-p methd: not a parameter of 06_explorer.ipynb"),
    (["explorer", "-p", "proportion=1.5"], "-p proportion=1.5: must be a number in (0, 1]"),
    (["explorer", "-p", "smoke=true"], "-p smoke: set by --smoke"),
    (["explorer", "-p", "report_dir=/tmp/x"], "-p report_dir: the app writes no report"),
    (["explorer", "-p", "data_root=/no/such/dir"], "-p data_root /no/such/dir: no such folder"),
    (["explorer", "-p", "device=tpu"], "train.device must be"),
    (["explorer", "--runs-dir", "/no/such/runs"], "--runs-dir /no/such/runs: no such folder"),
    (["tensorboard", "--runs-dir", "/no/such/runs"], "--runs-dir /no/such/runs: no such folder"),
    (["tensorboard", "--port", "70000"], "--port 70000: not a TCP port"),
])
def test_bad_input_is_one_error_line(argv, message, capsys):
    assert message in _error(argv, capsys)


@pytest.mark.parametrize("command", ["explorer", "tensorboard"])
def test_a_port_in_use_is_one_error_line(command, busy_port, tmp_path, capsys):
    err = _error([command, "--runs-dir", str(tmp_path), "--port", str(busy_port)], capsys)
    assert f"127.0.0.1:{busy_port} already in use" in err


def test_check_port_zero_finds_a_free_port():
    port = serve.check_port(0)
    assert port > 0 and serve.check_port(port) == port


def test_servers_listen_on_localhost_only(tmp_path):
    argv = tensorboard.tensorboard_argv(tmp_path, 6123)
    assert argv[argv.index("--logdir") + 1] == str(tmp_path)
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    cmd = explorer.voila_command(tmp_path / "06_explorer.ipynb", 8899)
    assert "--Voila.ip=127.0.0.1" in cmd and "--port=8899" in cmd
    assert "--Voila.port_retries=0" in cmd and "--strip_sources=True" in cmd


def test_explorer_parameters_are_the_notebooks(tmp_path):
    from trm_lib.reports.notebooks import parameters_of
    from trm_lib.utils.paths import notebooks_dir

    params = explorer.explorer_parameters(True, {"method": "dualcoop", "proportion": 0.3})
    assert set(params) == set(parameters_of(notebooks_dir() / "06_explorer.ipynb"))
    assert (params["smoke"], params["method"], params["proportion"]) == (True, "dualcoop", 0.3)
    assert params["tour_proportions"] == [0.1, 0.5, 0.9]  # the cell's default, parsed
    nb = explorer.prepare_app(tmp_path, params)
    import nbformat

    injected = [c for c in nbformat.read(nb, as_version=4).cells
                if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and 'method = "dualcoop"' in injected[0].source
