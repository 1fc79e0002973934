"""The one-line error policy is by type: every user-error class of the package becomes
``error: …`` with exit status 2, wherever it lives (a moved module cannot drop out of it)."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import trm_lib
from trm_lib import __main__ as cli
from trm_lib.utils.errors import UserError


def _all_user_errors() -> list[type[BaseException]]:
    for mod in pkgutil.walk_packages(trm_lib.__path__, "trm_lib."):
        if mod.name != "trm_lib.__main__":
            importlib.import_module(mod.name)
    seen: list[type[BaseException]] = []
    todo = [UserError]
    while todo:
        cls = todo.pop()
        seen.append(cls)
        todo.extend(cls.__subclasses__())
    return seen


def test_the_package_declares_its_user_errors():
    names = {cls.__name__ for cls in _all_user_errors()}
    # the classes the CLI named by module path before: each is found by type now
    assert {"ConfigError", "FileError", "BackboneError", "TrainingError", "DatasetError",
            "LabelError", "DistributedError", "ReportError", "FeatureCacheError", "LockedError",
            "DiskFullError", "NotebookFailed"} <= names


@pytest.mark.parametrize("cls", _all_user_errors(), ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_every_user_error_is_one_line_and_status_2(cls, monkeypatch, capsys):
    def boom(argv):
        try:
            err = cls("bad value in x.yaml: data.proportion\nsecond line")
        except TypeError:  # a subclass with its own constructor
            err = cls.__new__(cls)
            Exception.__init__(err, "bad value in x.yaml: data.proportion")
        raise err

    monkeypatch.setitem(cli.COMMANDS, "boom", ("trm_lib.tests_boom", "run", ""))
    monkeypatch.setattr(cli.importlib, "import_module", lambda name: type("M", (), {"run": boom}))
    assert cli.main(["boom"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: bad value in x.yaml") and err.count("\n") == 1
    assert "Traceback" not in err


def test_a_programming_error_is_not_swallowed(monkeypatch):
    def boom(argv):
        raise KeyError("bug")

    monkeypatch.setitem(cli.COMMANDS, "boom", ("x", "run", ""))
    monkeypatch.setattr(cli.importlib, "import_module", lambda name: type("M", (), {"run": boom}))
    with pytest.raises(KeyError):
        cli.main(["boom"])
