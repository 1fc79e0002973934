"""``python -m trm_lib cache``: what the cache folder holds, how big it is, and what is stale.

The cache (:func:`trm_lib.utils.paths.cache_dir`) keeps the SynthScenes worlds, the caption corpora,
the pre-trained TinyCLIP folders and the feature stores under content keys, so a change of code
or config makes a new folder and leaves the old one behind. An entry is **stale** when the
current code would never read it again:

- a world, corpus or TinyCLIP folder whose name is not the key the current code computes from
  the config recorded inside it (an older generator / pre-training version), or whose record is
  missing or unreadable (a damaged folder);
- a feature store of a dataset folder that no longer exists, or of a stale one, or computed with
  the weights of a stale TinyCLIP folder.

Nothing else is judged (masks, locks and incomplete feature stores, which resume, are listed).
``--prune`` deletes the stale entries.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: the folders holding keyed entries, with the record file each entry keeps its config in
KEYED = {"synthscenes": "world.json", "captions": "corpus.json", "tinyclip": "pretrain.json"}


@dataclass(frozen=True)
class CacheEntry:
    kind: str  # the top-level folder: synthscenes, captions, tinyclip, features, masks, ...
    path: Path
    size: int  # bytes on disk
    stale: str | None  # why the current code would not read it again; None: current


def folder_size(path: Path) -> int:
    """Bytes of the files under ``path`` (symlinks not followed)."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def _record(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def expected_name(kind: str, config: dict[str, Any]) -> str:
    """The folder name the current code gives an entry of ``kind`` built from ``config``."""
    if kind == "tinyclip":
        from trm_lib.tinyclip.config import PretrainConfig, config_hash

        cfg = PretrainConfig(**config)
        return f"{cfg.model}-{config_hash(cfg)}"
    from trm_lib.synth.world import CaptionConfig, WorldConfig, config_hash

    cfg = (WorldConfig if kind == "synthscenes" else CaptionConfig)(**config)
    return f"s{cfg.image_size}-seed{cfg.seed}-{config_hash(cfg)}"


def keyed_staleness(kind: str, folder: Path) -> str | None:
    """Why the world / corpus / TinyCLIP ``folder`` is stale, or None when it is current."""
    record = _record(folder / KEYED[kind])
    if record is None or not isinstance(record.get("config"), dict):
        return f"no readable {KEYED[kind]} (damaged or unfinished)"
    if kind == "tinyclip" and isinstance(record.get("shipped"), dict):
        return _shipped_staleness(folder, record)
    try:
        name = expected_name(kind, record["config"])
    except (TypeError, ValueError) as err:  # a field the current config no longer has
        return f"config the current code cannot read ({err})"
    return None if name == folder.name else f"the current code names this config {name}"


def _shipped_staleness(folder: Path, record: dict[str, Any]) -> str | None:
    """A folder rebuilt from the package's shipped TinyCLIP weights is current while the package
    still ships that file (the folder is named by its checksum)."""
    from trm_lib.tinyclip.shipped import read_checksums, shipped_dir

    model = str(record.get("model") or folder.name.split("-shipped-")[0])
    digest = read_checksums().get(f"{model}.safetensors")
    if digest is None:
        return f"the package ships no {model} weights any more"
    name = shipped_dir(model, digest).name
    return None if name == folder.name else f"the package now ships {name}"


def feature_staleness(store: Path, stale_roots: set[str], stale_weights: set[str]) -> str | None:
    """Why the feature store ``store`` is stale (module docstring), or None."""
    manifest = _record(store / "manifest.json")
    if manifest is None or not manifest.get("complete"):
        return None  # being written or resumable: not ours to judge
    key = manifest.get("key") or {}
    root = str((key.get("dataset") or {}).get("root") or "")
    weights = (key.get("backbone") or {}).get("weights_sha256")
    if root and str(Path(root).resolve()) in stale_roots:
        return f"dataset folder {root} is stale"
    if root and not Path(root).exists():
        return f"dataset folder {root} no longer exists"
    if weights and weights in stale_weights:
        return "computed with the weights of a stale TinyCLIP folder"
    return None


def scan(root: str | os.PathLike | None = None) -> list[CacheEntry]:
    """Every entry of the cache at ``root`` (default :func:`~trm_lib.utils.paths.cache_dir`)."""
    from trm_lib.utils.paths import cache_dir

    base = Path(root) if root is not None else cache_dir()
    entries: list[CacheEntry] = []
    stale_roots: set[str] = set()
    stale_weights: set[str] = set()
    for kind in KEYED:
        for folder in sorted(p for p in (base / kind).glob("*") if p.is_dir()):
            why = keyed_staleness(kind, folder)
            if why:
                stale_roots.add(str(folder.resolve()))
                sha = (_record(folder / KEYED[kind]) or {}).get("weights_sha256")
                if sha:
                    stale_weights.add(str(sha))
            entries.append(CacheEntry(kind, folder, folder_size(folder), why))
    for store in sorted(p for p in (base / "features").glob("*") if p.is_dir()):
        entries.append(CacheEntry("features", store, folder_size(store),
                                  feature_staleness(store, stale_roots, stale_weights)))
    known = {*KEYED, "features"}
    for other in sorted(p for p in base.glob("*") if p.name not in known):
        entries.append(CacheEntry(other.name, other, folder_size(other), None))
    return entries


def prune(entries: list[CacheEntry]) -> list[CacheEntry]:
    """Delete the stale ``entries``; returns those removed. An entry that cannot be deleted
    (a read-only cache) raises :class:`~trm_lib.utils.errors.FileError` naming it and what was
    removed before it, instead of "removed" printed for files still there (issue 29)."""
    from trm_lib.utils.errors import FileError

    removed: list[CacheEntry] = []
    problems: list[str] = []

    def failed(_func: Any, path: str, exc: Any) -> None:
        problems.append(f"{path}: {getattr(exc[1], 'strerror', None) or exc[1]}")

    for entry in (e for e in entries if e.stale):
        problems.clear()
        shutil.rmtree(entry.path, onerror=failed)
        if entry.path.exists():
            done = f"removed {len(removed)} entr{'y' if len(removed) == 1 else 'ies'} before it"
            raise FileError(f"{entry.path}: cannot remove the stale entry "
                            f"({problems[0] if problems else 'still there'}); {done}; the "
                            f"cache must be writable to prune it")
        removed.append(entry)
    return removed


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def cli(argv: list[str]) -> int:
    """List the cache's entries with their sizes and stale ones; ``--prune`` deletes those."""
    from trm_lib.utils.paths import cache_dir

    p = argparse.ArgumentParser(prog="python -m trm_lib cache", description=__doc__.split("\n")[0])
    p.add_argument("--root", default=None, help="cache folder (default: TRM_CACHE or .cache/trm)")
    p.add_argument("--prune", action="store_true", help="delete the stale entries")
    args = p.parse_args(argv)
    base = Path(args.root) if args.root else cache_dir()
    if not base.is_dir():
        raise FileNotFoundError(f"{base}: no such cache folder")
    entries = scan(base)
    print(f"{base}")
    for e in entries:
        note = f"  STALE: {e.stale}" if e.stale else ""
        print(f"  {e.kind:<12} {e.path.name:<28} {human(e.size):>10}{note}")
    stale = [e for e in entries if e.stale]
    print(f"total {human(sum(e.size for e in entries))}; {len(stale)} stale entr"
          f"{'y' if len(stale) == 1 else 'ies'} ({human(sum(e.size for e in stale))})"
          + ("" if args.prune or not stale else "; --prune deletes them"))
    if args.prune:
        for e in prune(entries):
            print(f"removed {e.path}")
    return 0


__all__ = ["CacheEntry", "cli", "expected_name", "prune", "scan"]
