"""``python -m trm_lib <command> ...`` — one entry point for every job.

Each command lives in the module that owns the concept; this file only dispatches, importing
lazily so ``--help`` is instant. It is also the one place that turns a user's mistake (a bad
config value, a missing or damaged file, an unknown method / dataset / notebook, malformed YAML)
into a single ``error: <message>`` line on stderr with exit status 2; ``--debug`` anywhere on the
command line, or ``TRM_DEBUG=1``, lets the traceback through instead.
"""

from __future__ import annotations

import importlib
import os
import sys

COMMANDS: dict[str, tuple[str, str, str]] = {
    # command: (module, function, one-line help)
    "synth": ("trm_lib.synth.world", "cli", "generate / locate the SynthScenes world"),
    "pretrain": ("trm_lib.tinyclip.pretrain", "cli", "pre-train (or locate) the cached TinyCLIP"),
    "features": ("trm_lib.tools.features", "cli", "compute / inspect the frozen-feature cache"),
    "train": ("trm_lib.experiments", "cli_train", "train one method from a config"),
    "evaluate": ("trm_lib.experiments", "cli_evaluate", "evaluate a checkpoint"),
    "experiment": ("trm_lib.experiments", "cli_experiment", "run a grid into a results CSV"),
    "report": ("trm_lib.reports.driver", "cli", "run the notebooks into reports/ with papermill"),
    "course": ("trm_lib.reports.course", "cli", "write the nbgrader course folder, or grade notebooks"),
    "bench": ("trm_lib.tools.bench", "cli", "benchmarks that print throughput figures"),
    "cache": ("trm_lib.tools.cache", "cli", "list the cache folders, their sizes and stale entries"),
    "tensorboard": ("trm_lib.tools.tensorboard", "cli", "TensorBoard on the runs folder (127.0.0.1)"),
    "explorer": ("trm_lib.tools.explorer", "cli", "notebook 06's explorer as a Voila app (127.0.0.1)"),
}


#: what a user's mistake looks like besides :class:`~trm_lib.utils.errors.UserError` (every
#: error class of the package derives from it): files the OS refuses, and malformed YAML
OS_USER_ERRORS: tuple[type[BaseException], ...] = (
    FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


def user_error_types() -> tuple[type[BaseException], ...]:
    """The exception types that become one ``error:`` line (by type, never by module path)."""
    from trm_lib.utils.errors import UserError

    yaml = sys.modules.get("yaml")  # a YAML error can only come from a loaded yaml
    return (UserError, *OS_USER_ERRORS, *((yaml.YAMLError,) if yaml is not None else ()))


def one_line(err: BaseException) -> str:
    """``error: <message>`` on one line: a multi-line message joined with "; "."""
    parts = [line.strip() for line in str(err).splitlines() if line.strip()]
    return "error: " + ("; ".join(parts) or type(err).__name__)


def _usage() -> str:
    lines = ["usage: python -m trm_lib <command> [options]", "", "commands:"]
    lines += [f"  {name:<11} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines.append("\nRun `python -m trm_lib <command> --help` for the options of a command; "
                 "--debug (or TRM_DEBUG=1) shows the traceback of an `error:` line.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``argv`` to its command; a user error becomes one ``error:`` line, status 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("TRM_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        print(f"error: unknown command {cmd!r} (known: {', '.join(COMMANDS)}; see --help)",
              file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[cmd]
    try:
        return int(getattr(importlib.import_module(module), func)(rest) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        # every writer is atomic and resumable: nothing half-written is left to clean up
        print("\ninterrupted; resume with the same command", file=sys.stderr)
        return 130
    except Exception as err:
        if debug or not isinstance(err, user_error_types()):
            raise
        print(one_line(err), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
