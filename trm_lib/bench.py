"""``python -m trm_lib bench <name>``: throughput benchmarks that print figures.

Speed targets are checked here, never in timed unit tests. Each benchmark lives beside the code it
measures and is registered below by name.
"""

from __future__ import annotations

import importlib
import sys

from .errors import ConfigError

BENCHMARKS: dict[str, tuple[str, str]] = {
    "synth": ("trm_lib.datasets.synthetic", "bench"),
    "features": ("trm_lib.features_cli", "bench"),
    "train": ("trm_lib.train_bench", "bench"),
}


def cli(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m trm_lib bench {" + ",".join(BENCHMARKS) + "} [options]")
        return 0
    if argv[0] not in BENCHMARKS:
        raise ConfigError(f"bench: unknown benchmark {argv[0]!r} (known: {', '.join(BENCHMARKS)})")
    module, func = BENCHMARKS[argv[0]]
    return int(getattr(importlib.import_module(module), func)(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
