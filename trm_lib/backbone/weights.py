"""Weight resolution: what a backbone's ``pretrained`` value names, and the files to hash.

``pretrained`` is an open_clip tag (``"openai"``), a weights file, a ``local-dir:`` folder
(open_clip_config.json + weights), ``None`` (random weights), or the name of a *provider*
registered in :data:`WEIGHT_PROVIDERS` (``"tinyclip"``: the project's TinyCLIP, declared here and
registered by :mod:`trm_lib.tinyclip.pretrain`, imported the first time the name is asked for).
The backbone asks this module; providers register into it, so the backbone never imports
pre-training, which itself builds on the backbone, and no caller has to import a provider first.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import open_clip

from trm_lib.utils.errors import BackboneError
from trm_lib.utils.io import read_json, sha256_file
from trm_lib.utils.registry import Registry

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")
_WEIGHT_SUFFIXES = WEIGHT_SUFFIXES
_LOCAL_DIR_SUFFIXES = (".safetensors", ".bin", ".pth")  # what open_clip looks for in a folder
_HASH_MEMO: dict[tuple[str, int, int], str] = {}

#: a provider maps a model name to a ``local-dir`` folder holding its weights (building it once)
Provider = Callable[[str], "str | os.PathLike[str]"]
WEIGHT_PROVIDERS: Registry[Provider] = Registry(
    "backbone.pretrained provider", declared={"tinyclip": "trm_lib.tinyclip.pretrain"},
    error=BackboneError)


def register_weights(name: str, provider: Provider) -> Provider:
    """Make ``pretrained=name`` resolve to the folder ``provider(model_name)`` returns."""
    return WEIGHT_PROVIDERS.register(name, provider)


def list_providers() -> list[str]:
    """The provider names (``pretrained`` values beyond tags, files and folders)."""
    return sorted(WEIGHT_PROVIDERS.names())


def hash_files(files: Sequence[Path]) -> str:
    """SHA-256 over (name, content hash) of ``files``; memoised on (path, size, mtime) because
    real CLIP weights are hundreds of MB and the identity is asked for on every cache lookup."""
    digest = hashlib.sha256()
    for f in sorted(files):
        st = f.stat()
        memo = (str(f.resolve()), st.st_size, st.st_mtime_ns)
        if memo not in _HASH_MEMO:
            _HASH_MEMO[memo] = sha256_file(f)
        digest.update(f"{f.name}:{_HASH_MEMO[memo]}\n".encode())
    return digest.hexdigest()


def _local_dir_files(folder: Path) -> list[Path]:
    """The config + weight files of a ``local-dir:`` folder, or an error naming what is missing
    (open_clip only *logs* a missing checkpoint and hands back a random model)."""
    if not folder.is_dir():
        raise BackboneError(f"{folder}: local-dir folder not found")
    config = folder / "open_clip_config.json"
    if not config.is_file():
        raise BackboneError(f"{config}: not found (a local-dir folder needs open_clip_config.json "
                            f"with a 'model_cfg' section, plus a weights file)")
    if "model_cfg" not in (read_json(config) or {}):
        raise BackboneError(f"{config}: missing the 'model_cfg' section")
    weights = [p for p in folder.iterdir() if p.suffix in _LOCAL_DIR_SUFFIXES and p.is_file()]
    if not weights:
        raise BackboneError(f"{folder}: no weights file (*.safetensors, *.bin, *.pth) beside "
                            f"open_clip_config.json")
    return [config, *weights]


def _check_quickgelu(model_name: str, tag: str) -> None:
    """OpenAI's weights were trained with QuickGELU; open_clip only *warns* when the plain model
    name (nn.GELU) is combined with them, and the features come out subtly wrong. Refuse early,
    before any download is attempted."""
    tag_cfg = open_clip.get_pretrained_cfg(model_name, tag)
    model_cfg = open_clip.get_model_config(model_name) or {}
    want, have = bool(tag_cfg.get("quick_gelu", False)), bool(model_cfg.get("quick_gelu", False))
    if tag_cfg and want != have:
        fix = (f"{model_name}-quickgelu" if want else model_name.removesuffix("-quickgelu"))
        raise BackboneError(
            f"backbone.model {model_name!r} with pretrained={tag!r}: the weights were trained "
            f"with quick_gelu={want} but the model uses quick_gelu={have}; use model name "
            f"{fix!r}")


def resolve_weights(model_name: str, pretrained: str | None
                        ) -> tuple[str, str | None, list[Path]]:
    """Map our ``pretrained`` forms to (open_clip name, open_clip pretrained, files to hash)."""
    if model_name.startswith("local-dir:"):
        folder = Path(model_name[len("local-dir:"):]).expanduser()
        return f"local-dir:{folder}", None, _local_dir_files(folder)
    if pretrained is None or str(pretrained).lower() in ("", "none", "random"):
        return model_name, None, []
    if pretrained in WEIGHT_PROVIDERS:
        folder = Path(WEIGHT_PROVIDERS.get(pretrained)(model_name))
        return f"local-dir:{folder}", None, _local_dir_files(folder)
    if pretrained.startswith("local-dir:"):
        folder = Path(pretrained[len("local-dir:"):]).expanduser()
        return f"local-dir:{folder}", None, _local_dir_files(folder)
    path = Path(pretrained).expanduser()
    if path.is_dir():
        return f"local-dir:{path}", None, _local_dir_files(path)
    if path.is_file():
        return model_name, str(path), [path]
    if open_clip.get_pretrained_cfg(model_name, pretrained):
        _check_quickgelu(model_name, pretrained)
        return model_name, pretrained, []
    if path.suffix in _WEIGHT_SUFFIXES or os.sep in pretrained:
        raise BackboneError(f"{path}: pretrained weights file not found")
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    raise BackboneError(
        f"backbone.pretrained={pretrained!r} is neither a file, a local-dir: folder, "
        f"{' / '.join(repr(n) for n in list_providers())}, nor an open_clip tag of {model_name!r} (tags: {', '.join(tags) or 'none'})")


def raise_if_damaged_weights(name: str, pretrained: str | None, err: Exception) -> None:
    """Raise a :class:`BackboneError` naming the weights file (or ``local-dir:`` folder) when
    loading it failed the way an empty, truncated or foreign file fails (safetensors' header
    errors, torch's zip / unpickling errors); return for anything else."""
    import pickle
    import zipfile

    kinds = (EOFError, pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError)
    source = pretrained or (name[len("local-dir:"):] if name.startswith("local-dir:") else None)
    if source is None or not (isinstance(err, kinds) or type(err).__name__ == "SafetensorError"):
        return
    first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
    raise BackboneError(f"{source}: cannot load the weights ({first}); the file is damaged or "
                        f"not open_clip weights: delete it (a cached TinyCLIP is pre-trained "
                        f"again) or point backbone.pretrained elsewhere") from None


__all__ = ["WEIGHT_PROVIDERS", "WEIGHT_SUFFIXES", "hash_files", "list_providers", "raise_if_damaged_weights",
           "register_weights", "resolve_weights"]
