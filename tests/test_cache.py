"""``python -m trm_lib cache``: sizes of the cache's entries, which are stale, and ``--prune``."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from trm_lib.synth.world import WorldConfig
from trm_lib.tinyclip.config import default_config, tinyclip_dir
from trm_lib.tools import cache


def _write(path: Path, obj: dict, pad: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    if pad:
        (path.parent / "data.bin").write_bytes(b"\0" * pad)
    return path.parent


def _store(base: Path, name: str, root: Path | str, weights: str | None = None,
           complete: bool = True) -> Path:
    key = {"dataset": {"root": str(root)}, "backbone": {"weights_sha256": weights}}
    return _write(base / "features" / name / "manifest.json", {"complete": complete, "key": key})


def test_scan_marks_exactly_the_stale_entries_and_prune_removes_them(tmp_path, capsys):
    base = tmp_path / "cache"
    world_cfg = asdict(WorldConfig(image_size=64, n_train=3, n_test=2))
    world = _write(base / "synthscenes" / cache.expected_name("synthscenes", world_cfg)
                   / "world.json", {"config": world_cfg}, pad=1000)
    old_world = _write(base / "synthscenes" / "s64-seed0-0123456789" / "world.json",
                       {"config": world_cfg})
    broken = _write(base / "captions" / "s64-seed1-abcdef0123" / "other.json", {})
    tc_cfg = asdict(default_config())
    tiny = _write(base / "tinyclip" / tinyclip_dir().name / "pretrain.json",
                  {"config": tc_cfg, "weights_sha256": "new"})
    old_tiny = _write(base / "tinyclip" / "TinyCLIP-RN-00000000aa" / "pretrain.json",
                      {"config": {**tc_cfg, "no_longer_a_field": 1}, "weights_sha256": "old"})
    keep = _store(base, "a", world)
    of_old_world = _store(base, "b", old_world)
    of_old_tiny = _store(base, "c", world, weights="old")
    of_gone = _store(base, "d", tmp_path / "deleted_dataset")
    unfinished = _store(base, "e", tmp_path / "deleted_dataset", complete=False)
    (base / "masks").mkdir()

    entries = {e.path: e for e in cache.scan(base)}
    stale = {p for p, e in entries.items() if e.stale}
    assert stale == {old_world, broken, old_tiny, of_old_world, of_old_tiny, of_gone}
    assert {world, tiny, keep, unfinished, base / "masks"} <= set(entries) - stale
    assert "names this config" in entries[old_world].stale
    assert "cannot read" in entries[old_tiny].stale
    assert "no longer exists" in entries[of_gone].stale
    assert entries[world].size >= 1000

    assert cache.cli(["--root", str(base)]) == 0
    out = capsys.readouterr().out
    assert out.count("STALE:") == 6 and "--prune deletes them" in out
    assert all(p.exists() for p in stale)  # listing deletes nothing
    assert cache.cli(["--root", str(base), "--prune"]) == 0
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in (world, tiny, keep, unfinished))
    assert not [e for e in cache.scan(base) if e.stale]


def test_folders_rebuilt_from_shipped_weights_are_current_while_the_package_ships_them(tmp_path):
    from trm_lib.tinyclip.shipped import read_checksums, shipped_dir

    base = tmp_path / "cache"
    digest = read_checksums()["TinyCLIP-RN.safetensors"]
    record = {"config": asdict(default_config()), "model": "TinyCLIP-RN",
              "shipped": {"sha256": digest}}
    current = _write(base / "tinyclip" / shipped_dir("TinyCLIP-RN", digest).name
                     / "pretrain.json", record)
    old = _write(base / "tinyclip" / "TinyCLIP-RN-shipped-000000000000" / "pretrain.json",
                 {**record, "shipped": {"sha256": "0" * 64}})
    entries = {e.path: e for e in cache.scan(base)}
    assert entries[current].stale is None
    assert "now ships" in entries[old].stale
