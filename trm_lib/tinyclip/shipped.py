"""The TinyCLIP weights that ship inside the package, so no machine pre-trains (or gets its own
CPU's variant of) the model every number in the report rests on.

The pre-trained TinyCLIP-RN is 33.7 MB in fp32, three quarters of it the token embedding
(49,408 x 128), of which the caption corpus and every prompt the methods build use a few dozen
rows. The shipped file (``weights/<model>.safetensors``, about 8.5 MB) keeps every other tensor
as trained and of the embedding only those rows, with their ids
(``token_embedding.weight.rows`` / ``.ids``); the open_clip config and the recipe's
``pretrain.json`` ride in its safetensors metadata. :func:`shipped_folder` rebuilds an ordinary
open_clip ``local-dir:`` folder from it in the cache: the full-size embedding with the kept rows
in place and zeros elsewhere. Any text whose tokens are all kept therefore goes through exactly
the same arithmetic as in the pre-trained model (bit-identical features); learnable-context
prompts (CoOp / DualCoOp) splice their own vectors in place of the placeholder rows and read
only the kept rows of the class names around them.

Integrity: ``weights/SHA256SUMS`` holds each file's SHA-256, checked before the folder is built
(a damaged file is one ``error:`` line). The rebuilt folder's config records that checksum, so
feature-store keys (which hash the folder's files) follow the shipped file.
``python -m trm_lib pretrain --export`` runs the recipe and writes the file and its checksum.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from trm_lib.utils.errors import FileError
from trm_lib.utils.io import atomic_dir, read_json, sha256_file, write_json
from trm_lib.utils.locks import file_lock
from trm_lib.utils.paths import cache_dir

from .config import MANIFEST, WEIGHTS_FILE, ZERO_SHOT_TEMPLATE

SHIPPED_DIR = Path(__file__).resolve().parent / "weights"
CHECKSUMS = "SHA256SUMS"
FORMAT = "trm-tinyclip-compact-1"
EMBEDDING = "token_embedding.weight"  # open_clip CLIP's text token embedding
ROWS, IDS = f"{EMBEDDING}.rows", f"{EMBEDDING}.ids"
_VERIFIED: dict[tuple[str, int, int], str] = {}


def shipped_file(model: str = "TinyCLIP-RN", root: Path | None = None) -> Path:
    """Where the shipped weights of ``model`` live (whether or not they exist)."""
    return (root or SHIPPED_DIR) / f"{model}.safetensors"


def has_shipped(model: str = "TinyCLIP-RN") -> bool:
    return shipped_file(model).is_file()


def read_checksums(root: Path | None = None) -> dict[str, str]:
    """``{file name: sha256}`` from ``SHA256SUMS`` (``sha256sum`` format)."""
    path = (root or SHIPPED_DIR) / CHECKSUMS
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            out[name.lstrip("*")] = digest
    return out


def _write_checksum(file: Path) -> str:
    digest = sha256_file(file)
    sums = {**read_checksums(file.parent), file.name: digest}
    text = "".join(f"{d}  {n}\n" for n, d in sorted(sums.items()))
    (file.parent / CHECKSUMS).write_text(text)
    return digest


def verify(file: Path) -> str:
    """The file's SHA-256 after checking it against ``SHA256SUMS`` beside it (memoised on
    path, size and mtime); a missing entry or a mismatch raises one :class:`FileError` line."""
    st = file.stat()
    memo = (str(file), st.st_size, st.st_mtime_ns)
    if memo in _VERIFIED:
        return _VERIFIED[memo]
    want = read_checksums(file.parent).get(file.name)
    got = sha256_file(file)
    if want is None:
        raise FileError(f"{file.parent / CHECKSUMS}: no checksum for {file.name} "
                        f"(write it with `python -m trm_lib pretrain --export {file}`)")
    if got != want:
        raise FileError(f"{file}: SHA-256 {got[:16]}... does not match {CHECKSUMS} "
                        f"({want[:16]}...): the file is damaged; reinstall the package or rebuild "
                        f"it with `python -m trm_lib pretrain --export {file}`")
    _VERIFIED[memo] = got
    return got


# ---------------------------------------------------------------------------------------------
# Which rows are kept
# ---------------------------------------------------------------------------------------------

def prompt_texts(class_names: Sequence[str]) -> list[str]:
    """Every fixed text the methods build for ``class_names``: the zero-shot template and the
    default backbone template over each class's prompt name, the CoOp placeholder ``X`` and the
    context initialisation ``a photo of a`` (presets' ``method.ctx_init``)."""
    from trm_lib.config.run_config import BackboneConfig
    from trm_lib.synth.pictograms import prompt_name

    templates = dict.fromkeys([ZERO_SHOT_TEMPLATE, *BackboneConfig().templates])
    texts = [t.format(prompt_name(c)) for c in class_names for t in templates]
    return [*texts, *(f"X X X X {prompt_name(c)}." for c in class_names), "a photo of a"]


def token_ids(tokenizer: Any, texts: Iterable[str]) -> torch.Tensor:
    """Sorted distinct token ids of ``texts`` (padding, start and end tokens included)."""
    tokens = tokenizer(list(texts))
    return torch.unique(tokens.reshape(-1)).to(torch.int64)


def corpus_texts(cfg: Any) -> list[str]:
    """The captions of ``cfg``'s caption corpus (generated if missing) and the prompts for its
    classes: what the kept rows must cover."""
    from trm_lib.synth.world import ensure_captions, load_captions

    caption_cfg = cfg.caption_config()
    root = ensure_captions(caption_cfg, progress=False)
    captions = [str(c) for c in load_captions(root)["caption"]]
    return [*captions, *prompt_texts(caption_cfg.class_names)]


# ---------------------------------------------------------------------------------------------
# Export (recipe folder -> compact file) and rebuild (compact file -> local-dir folder)
# ---------------------------------------------------------------------------------------------

def export(folder: str | os.PathLike, out: str | os.PathLike, texts: Iterable[str]) -> str:
    """Write the compact file ``out`` from the pre-trained ``local-dir`` ``folder``, keeping the
    embedding rows of every token of ``texts``, and record its SHA-256 in ``SHA256SUMS`` beside
    it. Returns the checksum."""
    import open_clip
    from safetensors.torch import load_file, save_file

    folder, out = Path(folder), Path(out)
    config = read_json(folder / "open_clip_config.json")
    manifest = read_json(folder / MANIFEST) if (folder / MANIFEST).is_file() else {}
    state = load_file(str(folder / WEIGHTS_FILE))
    if EMBEDDING not in state:
        raise FileError(f"{folder / WEIGHTS_FILE}: no {EMBEDDING} (not an open_clip CLIP)")
    ids = token_ids(open_clip.get_tokenizer(f"local-dir:{folder}"), texts)
    full = state.pop(EMBEDDING)
    state[ROWS] = full[ids].contiguous()
    state[IDS] = ids
    meta = {"format": FORMAT, "vocab_size": str(full.shape[0]),
            "open_clip_config": json.dumps(config, sort_keys=True),
            "pretrain": json.dumps(manifest, sort_keys=True),
            "source_sha256": sha256_file(folder / WEIGHTS_FILE)}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    save_file(state, str(tmp), metadata=meta)
    tmp.chmod(0o644)  # package data: readable by everyone (safetensors writes 0600)
    os.replace(tmp, out)
    return _write_checksum(out)


def _read(file: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as fh:
        meta = fh.metadata() or {}
        if meta.get("format") != FORMAT:
            raise FileError(f"{file}: not a shipped TinyCLIP file (format "
                            f"{meta.get('format')!r}, expected {FORMAT!r})")
        return {k: fh.get_tensor(k) for k in fh.keys()}, meta  # noqa: SIM118


def full_state(file: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The open_clip state dict of the shipped ``file``: the embedding at full size, kept rows
    in place, zeros elsewhere. Also returns the file's metadata."""
    state, meta = _read(file)
    rows, ids = state.pop(ROWS), state.pop(IDS)
    full = torch.zeros(int(meta["vocab_size"]), rows.shape[1], dtype=rows.dtype)
    full[ids] = rows
    state[EMBEDDING] = full
    return state, meta


def rebuild(file: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write the ``local-dir`` folder of the shipped ``file`` to ``out_dir`` (atomically):
    ``open_clip_config.json`` (recording the file's checksum), the full-size weights and the
    recipe's ``pretrain.json`` with a ``shipped`` entry."""
    from safetensors.torch import save_file

    file, out_dir = Path(file), Path(out_dir)
    digest = verify(file)
    state, meta = full_state(file)
    with atomic_dir(out_dir) as tmp:
        config = {**json.loads(meta["open_clip_config"]), "shipped_sha256": digest}
        write_json(tmp / "open_clip_config.json", config)
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        manifest = json.loads(meta.get("pretrain") or "{}")
        manifest["shipped"] = {"file": file.name, "sha256": digest,
                               "kept_rows": int(state[EMBEDDING].any(dim=1).sum()),
                               "source_sha256": meta.get("source_sha256")}
        manifest["weights_sha256"] = sha256_file(tmp / WEIGHTS_FILE)
        write_json(tmp / MANIFEST, manifest)
    return out_dir


def shipped_dir(model: str = "TinyCLIP-RN", digest: str | None = None) -> Path:
    """The cache folder the shipped weights of ``model`` are rebuilt into (named by their
    checksum, so a new shipped file never meets an old folder)."""
    digest = digest or read_checksums().get(shipped_file(model).name, "unknown")
    return cache_dir() / "tinyclip" / f"{model}-shipped-{digest[:12]}"


def shipped_folder(model: str = "TinyCLIP-RN") -> Path:
    """The ``local-dir`` folder of the shipped weights of ``model``, rebuilt once per checksum
    (the file's checksum is verified on every call: a damaged file is an error, never a
    silently different model)."""
    file = shipped_file(model)
    if not file.is_file():
        raise FileError(f"{file}: no shipped weights for {model!r} (pre-train them with "
                        f"`python -m trm_lib pretrain --model {model}`)")
    digest = verify(file)
    folder = shipped_dir(model, digest)

    def complete() -> bool:
        done = folder / MANIFEST
        return (done.is_file() and (read_json(done).get("shipped") or {}).get("sha256") == digest
                and (folder / WEIGHTS_FILE).is_file())

    if complete():  # no lock: a complete read-only cache could not create one (issue 29)
        return folder
    with file_lock(folder.parent / f".{folder.name}.lock", what=f"TinyCLIP cache {folder}"):
        if not complete():
            rebuild(file, folder)
    return folder


def shipped_manifest(model: str = "TinyCLIP-RN") -> dict[str, Any]:
    """The recipe's ``pretrain.json`` stored in the shipped file (config, zero-shot mAP, ...)."""
    return json.loads(_read(shipped_file(model))[1].get("pretrain") or "{}")


__all__ = ["SHIPPED_DIR", "corpus_texts", "export", "full_state", "has_shipped",
           "prompt_texts", "read_checksums", "rebuild", "shipped_dir", "shipped_file",
           "shipped_folder", "shipped_manifest", "token_ids", "verify"]
