"""``python -m trm_lib tensorboard``: TensorBoard on the runs folder, on 127.0.0.1.

Every run folder holds TensorBoard event files (:mod:`trm_lib.train.tensorboard`), so the runs
folder is a TensorBoard log directory whose runs are the run folders (a grid's runs side by side
in the Time Series and HParams tabs). This is ``tensorboard --logdir <runs> --host 127.0.0.1``
with the workbench's runs folder as default and its one-line errors.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .serve import HOST, check_folder, check_port

DEFAULT_PORT = 6006  # TensorBoard's own default


def tensorboard_argv(runs: Path, port: int) -> list[str]:
    """The TensorBoard command line (without the program name) for ``runs`` on ``port``."""
    # load_fast=false: the pure-Python reader, no separate data-server binary to start
    return ["--logdir", str(runs), "--host", HOST, "--port", str(port), "--load_fast", "false",
            "--reload_interval", "5"]


def cli(argv: list[str]) -> int:
    """Check the runs folder and the port, then serve TensorBoard until Ctrl+C."""
    from trm_lib.utils.paths import runs_dir

    p = argparse.ArgumentParser(prog="python -m trm_lib tensorboard",
                                description="TensorBoard on the runs folder (every run folder "
                                            "is a TensorBoard run), on 127.0.0.1.")
    p.add_argument("--runs-dir", help="folder of the run folders (default: TRM_RUNS or runs/)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"port (default {DEFAULT_PORT}; 0: any free port)")
    args = p.parse_args(argv)
    runs = check_folder(args.runs_dir, "--runs-dir") if args.runs_dir else runs_dir()
    port = check_port(args.port)
    from tensorboard import program

    board = program.TensorBoard()
    board.configure(argv=[None, *tensorboard_argv(runs, port)])
    print(f"TensorBoard on {runs}: http://{HOST}:{port}/ (Ctrl+C stops it)", flush=True)
    board.main()
    return 0


__all__ = ["DEFAULT_PORT", "cli", "tensorboard_argv"]
