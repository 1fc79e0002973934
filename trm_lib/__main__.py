"""``python -m trm_lib <command> ...`` — one entry point for every job.

Each command lives in the module that owns the concept; this file only dispatches, importing
lazily so ``--help`` is instant.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str, str]] = {
    # command: (module, function, one-line help)
    "synth": ("trm_lib.datasets.synthetic", "cli", "generate / locate the SynthScenes world"),
    "pretrain": ("trm_lib.pretrain", "cli", "pre-train (or locate) the cached TinyCLIP"),
    "features": ("trm_lib.features_cli", "cli", "compute / inspect the frozen-feature cache"),
    "train": ("trm_lib.experiments", "cli_train", "train one method from a config"),
    "evaluate": ("trm_lib.experiments", "cli_evaluate", "evaluate a checkpoint"),
    "experiment": ("trm_lib.experiments", "cli_experiment", "run a grid into a results CSV"),
    "report": ("trm_lib.reports", "cli", "run the notebooks into reports/ with papermill"),
    "course": ("trm_lib.course", "cli", "write course/student + course/solutions, or grade"),
    "bench": ("trm_lib.bench", "cli", "benchmarks that print throughput figures"),
}


def _usage() -> str:
    lines = ["usage: python -m trm_lib <command> [options]", "", "commands:"]
    lines += [f"  {name:<11} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines.append("\nRun `python -m trm_lib <command> --help` for the options of a command.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        print(f"unknown command {cmd!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[cmd]
    return int(getattr(importlib.import_module(module), func)(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
