"""The frozen open_clip backbone: global + dense text-aligned image tokens, class text embeddings.

TRM-ML matches class texts against *regions*, so besides CLIP's one global image embedding we need
a dense token map ``F~ (L = h*w tokens)`` that already lives in the joint text-image space, with
no training (docs/METHOD_CHOICES.md: the head's rows; docs/DESIGN.md):

* **ResNet** (RN50, RN101, TinyCLIP-RN): the layer4 map goes through the attention pool, which we
  re-implement so that it also yields, per location, the value projection followed by the output
  projection (``v_proj -> c_proj``; the MaskCLIP / DualCoOp trick). CLIP's global embedding is a
  convex combination of exactly these per-location vectors (plus the mean token's), which is why
  they are comparable with class texts. The positional embedding is added first, as in the pool.
* **ViT**: the output tokens after ``ln_post``, multiplied by ``visual.proj`` -- the same map the
  class token goes through to become the global embedding.

Neither open_clip tower interpolates positional embeddings at forward time, and ResNet's pool
embedding is not resized on checkpoint load, so every model is built at its native size, its
weights loaded, and then resized here (bicubic, class position kept): one path for random and
pretrained weights alike. Token order is row-major over the (h, w) grid.

Learnable prompts over the same frozen text tower live in :mod:`trm_lib.core.prompts`.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import open_clip
import torch
import torch.nn.functional as F
from open_clip.modified_resnet import ModifiedResNet
from open_clip.transformer import VisionTransformer
from torch import nn

from trm_lib.utils.errors import BackboneError
from trm_lib.utils.io import read_json

from .weights import hash_files, raise_if_damaged_weights, resolve_weights

if TYPE_CHECKING:
    from trm_lib.config.run_config import BackboneConfig

MODEL_CONFIG_DIR = Path(__file__).resolve().parent.parent / "model_configs"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
AUGMENTS = ("crop_flip", "cutout", "none")
_REGISTERED: set[Path] = set()


# ---------------------------------------------------------------------------------------------
# Model configs and weights
# ---------------------------------------------------------------------------------------------

def register_model_configs(folder: str | os.PathLike | None = None) -> list[str]:
    """Register every ``*.json`` model config in ``folder`` (default ``trm_lib/model_configs``)
    with open_clip; idempotent. Returns the model names (file stems) found there.

    open_clip silently skips JSONs that lack ``embed_dim``/``vision_cfg``/``text_cfg``; we raise
    instead, naming the file, so a typo does not surface later as "model not found".
    """
    folder = Path(folder) if folder is not None else MODEL_CONFIG_DIR
    if not folder.is_dir():
        return []
    names = []
    for path in sorted(folder.glob("*.json")):
        cfg = read_json(path)
        missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg")
                   if not isinstance(cfg, dict) or k not in cfg]
        if missing:
            raise BackboneError(f"{path}: model config lacks {', '.join(missing)}")
        names.append(path.stem)
    key = folder.resolve()
    if names and key not in _REGISTERED:
        open_clip.add_model_config(key)
        _REGISTERED.add(key)
    return names


@contextlib.contextmanager
def _quiet_random_init_log() -> Iterator[None]:
    """open_clip logs a root-level warning for every random model; pretrained=None is a choice."""

    def drop(record: logging.LogRecord) -> bool:
        return "Model initialized randomly" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


# ---------------------------------------------------------------------------------------------
# Positional-embedding interpolation
# ---------------------------------------------------------------------------------------------

def interpolate_pos_embed(pos: torch.Tensor, new_grid: tuple[int, int],
                          old_grid: tuple[int, int] | None = None,
                          extra_tokens: int = 1) -> torch.Tensor:
    """Resize a ``(extra + h*w, C)`` positional embedding to ``new_grid`` (bicubic, antialiased
    like open_clip's own ViT loader); the leading class position(s) are kept as they are."""
    tok, img = pos[:extra_tokens], pos[extra_tokens:]
    if old_grid is None:
        side = math.isqrt(img.shape[0])
        if side * side != img.shape[0]:
            raise BackboneError(f"positional embedding has {img.shape[0]} grid positions, not a "
                                f"square; pass old_grid")
        old_grid = (side, side)
    if old_grid[0] * old_grid[1] != img.shape[0]:
        raise BackboneError(f"old_grid {old_grid} does not match {img.shape[0]} positions")
    grid = img.reshape(1, old_grid[0], old_grid[1], -1).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=tuple(new_grid), mode="bicubic", align_corners=False,
                         antialias=True)
    img = grid.permute(0, 2, 3, 1).reshape(new_grid[0] * new_grid[1], -1).to(pos.dtype)
    return torch.cat([tok, img], dim=0)


def _set_image_size(visual: nn.Module, size: int) -> tuple[int, int]:
    """Resize ``visual``'s positional embedding in place for ``size`` px; returns the grid."""
    if isinstance(visual, ModifiedResNet):
        if size % 32:
            raise BackboneError(f"backbone.image_size {size} must be a multiple of 32 for a "
                                f"ResNet (the layer4 stride)")
        grid = (size // 32, size // 32)
        pool = visual.attnpool
        if pool.positional_embedding.shape[0] != grid[0] * grid[1] + 1:
            new = interpolate_pos_embed(pool.positional_embedding.data, grid)
            pool.positional_embedding = nn.Parameter(new, requires_grad=False)
        visual.image_size = size
        return grid
    patch = visual.patch_size
    if size % patch[0] or size % patch[1]:
        raise BackboneError(f"backbone.image_size {size} must be a multiple of the patch size "
                            f"{patch[0]}")
    grid = (size // patch[0], size // patch[1])
    if tuple(visual.grid_size) != grid:
        new = interpolate_pos_embed(visual.positional_embedding.data, grid,
                                    old_grid=tuple(visual.grid_size))
        visual.positional_embedding = nn.Parameter(new, requires_grad=False)
        visual.grid_size = grid
    visual.image_size = (size, size)
    return grid


# ---------------------------------------------------------------------------------------------
# Text tower access (CLIP keeps it on the model, CustomTextCLIP on model.text)
# ---------------------------------------------------------------------------------------------

def resnet_feature_map(visual: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The layer4 map ``(B, d_v, h, w)`` of an open_clip ``ModifiedResNet`` (stem .. layer4)."""
    return visual.layer4(visual.layer3(visual.layer2(visual.layer1(visual.stem(images)))))


def fold_batchnorm(module: nn.Module) -> int:
    """Fold every eval-mode ``BatchNorm2d`` into the ``Conv2d`` registered just before it (in
    place; the BatchNorm becomes ``nn.Identity``) and return how many were folded.

    A frozen ResNet never updates its statistics, so ``bn(conv(x))`` is one affine map per
    channel that the convolution can absorb: the same features up to float rounding, and the
    normalisation passes (~30 % of TinyCLIP's CPU time) disappear. open_clip's
    ``ModifiedResNet`` registers each conv directly before its BatchNorm (stem, bottlenecks,
    downsample branches)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = 0
    children = list(module.named_children())
    for (name, child), (next_name, next_child) in zip(children, children[1:]):
        if isinstance(child, nn.Conv2d) and isinstance(next_child, nn.BatchNorm2d):
            if next_child.training:
                raise BackboneError("fold_batchnorm needs eval-mode BatchNorm (frozen stats)")
            setattr(module, name, fuse_conv_bn_eval(child, next_child))
            setattr(module, next_name, nn.Identity())
            folded += 1
    for _, child in module.named_children():
        folded += fold_batchnorm(child)
    return folded


def folded_tower(visual: nn.Module) -> nn.Module:
    """The stem and layers of an open_clip ``ModifiedResNet`` (what :func:`resnet_feature_map`
    runs) with every eval-mode BatchNorm folded into its convolution, channels-last, for
    inference; ``visual`` itself is untouched.

    The module structure is copied, its tensors are not: a ``deepcopy`` whose memo maps every
    parameter and buffer of ``visual`` to itself shares them, and the attention pool is left
    out (an ``nn.Identity`` in its place). Folding then replaces each conv + BatchNorm pair of
    the copy by a new conv with the folded weights -- the only new tensors. A conv that had
    no BatchNorm to fold would still share its weight, so it is cloned before the copy goes
    channels-last (``Module.to`` rewrites ``param.data`` in place)."""
    shared = {id(t): t for t in (*visual.parameters(), *visual.buffers())}
    memo: dict[int, Any] = dict(shared)
    if hasattr(visual, "attnpool"):
        memo[id(visual.attnpool)] = nn.Identity()
    folded = copy.deepcopy(visual, memo).eval()
    fold_batchnorm(folded)
    for module in folded.modules():
        for name, t in [*module._parameters.items(), *module._buffers.items()]:
            if t is not None and id(t) in shared:
                clone = t.detach().clone()
                if name in module._parameters:
                    module._parameters[name] = nn.Parameter(clone, requires_grad=t.requires_grad)
                else:
                    module._buffers[name] = clone
    return folded.to(memory_format=torch.channels_last)


def resnet_dense_tokens(pool: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """``c_proj(v_proj(token + pos))`` at every location of flattened layer4 tokens
    ``(B, L, d_v)``: the attention pool's value path, i.e. the text-aligned dense tokens F~."""
    return pool.c_proj(pool.v_proj(tokens + pool.positional_embedding[1:].to(tokens.dtype)))


# ---------------------------------------------------------------------------------------------
# FrozenCLIP
# ---------------------------------------------------------------------------------------------

class FrozenCLIP(nn.Module):
    """A frozen open_clip model that returns global and dense text-aligned image features.

    ``pretrained``: an open_clip tag (``"openai"``), a weights file, a ``local-dir:`` folder,
    ``"tinyclip"`` (the project's cached TinyCLIP, see :mod:`trm_lib.tinyclip.pretrain`) or ``None``
    (random weights, seeded by ``seed`` so that feature caches of a random model stay valid).
    ``image_size``: None for the model's native size, else resized (positional interpolation).
    ``precision``: autocast dtype on CUDA (auto = bf16); CPU always computes in fp32.
    """

    def __init__(self, model_name: str, pretrained: str | None = None,
                 image_size: int | None = None, device: str | torch.device = "cpu",
                 precision: str = "auto", batch_size: int = 128, seed: int = 0,
                 templates: Sequence[str] = ("a photo of a {}.",)):
        super().__init__()
        if precision not in PRECISIONS:
            raise BackboneError(f"backbone.precision must be one of {list(PRECISIONS)}, "
                                f"got {precision!r}")
        if batch_size < 1:
            raise BackboneError(f"backbone.batch_size must be >= 1, got {batch_size}")
        register_model_configs()
        oc_name, oc_pretrained, files = resolve_weights(model_name, pretrained)
        if not oc_name.startswith("local-dir:") and open_clip.get_model_config(oc_name) is None:
            raise BackboneError(f"backbone.model {model_name!r} is not an open_clip model config "
                                f"(see open_clip.list_models(); tiny configs live in "
                                f"{MODEL_CONFIG_DIR})")
        self.model_name = model_name
        self.pretrained = pretrained
        self.precision = precision
        self.batch_size = batch_size
        self.seed = seed
        self.templates = tuple(templates)
        self._weights_sha256 = hash_files(files) if files else None
        random = not files and not oc_pretrained
        # what the identity calls the weights: local files are named by their hash alone (not
        # their path), so the same TinyCLIP reached as `tinyclip` or as a `local-dir:` folder
        # (pre-training's own zero-shot evaluation) shares one feature store
        self._source = (f"random(seed={seed})" if random else "file" if files
                        else str(pretrained) if pretrained is not None else model_name)
        self.model = self._create(oc_name, oc_pretrained, random=random)
        self.tokenizer = open_clip.get_tokenizer(oc_name)

        visual = self.model.visual
        if isinstance(visual, ModifiedResNet):
            self.is_vit = False
            self.dense_dim = visual.attnpool.c_proj.in_features
        elif isinstance(visual, VisionTransformer):
            if visual.attn_pool is not None or visual.pool_type not in ("tok", "avg"):
                raise BackboneError(f"backbone.model {model_name!r}: ViTs with attentional "
                                    f"pooling or pool_type 'none' are not supported")
            self.is_vit = True
            self.dense_dim = visual.transformer.width
        else:
            raise BackboneError(f"backbone.model {model_name!r}: vision tower "
                                f"{type(visual).__name__} is not supported (ResNet or ViT only)")
        native = visual.image_size
        native = native[0] if isinstance(native, tuple | list) else native
        self.set_image_size(int(image_size or native))
        self.embed_dim = int(visual.output_dim)
        pp = visual.preprocess_cfg
        self.mean, self.std = tuple(pp["mean"]), tuple(pp["std"])
        self._interpolation = pp.get("interpolation", "bicubic")

        for p in self.model.parameters():
            p.requires_grad_(False)
        self.eval()
        self.to(torch.device("cuda" if str(device) == "auto" and torch.cuda.is_available()
                             else "cpu" if str(device) == "auto" else device))

    def _create(self, name: str, pretrained: str | None, random: bool) -> nn.Module:
        """Build at the native size and load the weights (strictly), in fp32 on the CPU."""
        rng = torch.random.fork_rng(devices=[]) if random else contextlib.nullcontext()
        with rng, _quiet_random_init_log(), warnings.catch_warnings():
            # backstop for _check_quickgelu: the mismatch warning becomes an exception
            warnings.filterwarnings("error", message=".*QuickGELU mismatch.*")
            if random:
                torch.manual_seed(self.seed)
            try:
                return open_clip.create_model(name, pretrained=pretrained, device="cpu",
                                              precision="fp32")
            except UserWarning as err:
                raise BackboneError(f"backbone.model {name!r}: {err} Use the '-quickgelu' "
                                    f"model name.") from None
            except RuntimeError as err:
                if pretrained and "download" in str(err).lower():
                    raise BackboneError(
                        f"cannot obtain open_clip weights {name}/{pretrained} ({err}); offline, "
                        f"pass a weights file or a local-dir: folder instead") from None
                raise_if_damaged_weights(name, pretrained, err)
                raise
            except Exception as err:
                raise_if_damaged_weights(name, pretrained, err)
                raise

    @classmethod
    def from_config(cls, cfg: BackboneConfig, device: str | torch.device = "cpu") -> FrozenCLIP:
        return cls(cfg.model, cfg.pretrained, cfg.image_size, device=device,
                   precision=cfg.precision, batch_size=cfg.batch_size, templates=cfg.templates)

    def set_image_size(self, size: int) -> tuple[int, int]:
        """Run at ``size`` px from now on: the positional embedding is interpolated from the
        current one (the constructor does this from the native size). Returns the grid."""
        self.grid = _set_image_size(self.model.visual, size)
        self.image_size = size
        return self.grid

    # -- placement -----------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The autocast dtype actually used on the current device (None = fp32)."""
        if self.device.type != "cuda" or self.precision == "fp32":
            return None
        return torch.float16 if self.precision == "fp16" else torch.bfloat16

    def to(self, *args: Any, **kwargs: Any) -> FrozenCLIP:
        super().to(*args, **kwargs)
        # NHWC convolutions are the fast path on tensor cores and in oneDNN on CPUs (measured:
        # TinyCLIP features 90 -> 156 images/s on 2 cores; 235 with the folded BatchNorm)
        self.model.visual.to(memory_format=torch.channels_last)
        return self

    def train(self, mode: bool = True) -> FrozenCLIP:
        """Always stays in eval mode: BatchNorm statistics and dropout are part of the frozen
        model, whatever a parent module asks for."""
        return super().train(False)

    # -- images --------------------------------------------------------------------------------

    def forward(self, images: torch.Tensor, raw: bool = False) -> dict[str, torch.Tensor]:
        return self.encode_images(images, raw=raw)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor, raw: bool = False) -> dict[str, torch.Tensor]:
        """``{"global": (B, D), "dense": (B, L, D)[, "dense_raw": (B, L, d_v)]}`` in float32 on
        the backbone's device, for normalised ``(B, 3, S, S)`` images (see :meth:`transform`)."""
        if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[2:]) != (
                self.image_size, self.image_size):
            raise BackboneError(f"images must be (B, 3, {self.image_size}, {self.image_size}), "
                                f"got {tuple(images.shape)}")
        parts: list[dict[str, torch.Tensor]] = []
        dtype = self.autocast_dtype
        for chunk in images.split(self.batch_size):
            x = chunk.to(self.device, torch.float32, non_blocking=True)
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=dtype or torch.float32,
                                enabled=dtype is not None):
                out = self._vit(x, raw) if self.is_vit else self._resnet(x, raw)
            parts.append({k: v.float() for k, v in out.items()})
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    def _folded_visual(self) -> nn.Module:
        """An inference view of the ResNet image tower with every BatchNorm folded into its
        convolution (:func:`fold_batchnorm`), remade whenever the tower's tensors change.

        Separate, so that ``self.model`` stays open_clip's own model (state dict, weights) while
        the features come out ~1.5x faster on CPU -- but not a second copy of the tower: it
        holds only the folded convolution weights (new tensors by nature), without the
        BatchNorms and the attention pool, which the feature map never uses
        (:func:`folded_tower`). Kept out of the module tree (not a submodule): it is
        derived data, never saved or trained. The key (each tensor's identity and in-place
        version counter) notices ``load_state_dict``, in-place edits and device moves."""
        visual = self.model.visual
        key = tuple((id(t), t._version, t.device, t.dtype)
                    for t in (*visual.parameters(), *visual.buffers()))
        cached = self.__dict__.get("_folded")
        if cached is None or cached[0] != key:
            self.__dict__.pop("_folded", None)  # the old view goes before the new one is made
            self.__dict__["_folded"] = cached = (key, folded_tower(visual))
        return cached[1]

    def _resnet(self, x: torch.Tensor, raw: bool) -> dict[str, torch.Tensor]:
        fmap = resnet_feature_map(self._folded_visual(), x)  # (B, d_v, h, w)
        tokens = fmap.flatten(2).transpose(1, 2)  # (B, L, d_v), row-major over the grid
        out = self.attention_pool(tokens)
        if raw:
            out["dense_raw"] = tokens
        return out

    def attention_pool(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """open_clip's ``AttentionPool2d`` on flattened tokens ``(B, L, d_v)``, returning the
        pooled output (``global``, the class query over mean + spatial tokens) and, per location,
        ``c_proj(v_proj(token + pos))`` (``dense``). Only the mean token queries, so the cost is
        O(L) rather than O(L^2)."""
        pool = self.model.visual.attnpool
        B, L, C = tokens.shape
        heads = pool.num_heads
        x = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)
        x = x + pool.positional_embedding.to(x.dtype)
        q = pool.q_proj(x[:, :1]).view(B, 1, heads, C // heads).transpose(1, 2)
        k = pool.k_proj(x).view(B, L + 1, heads, C // heads).transpose(1, 2)
        val = pool.v_proj(x)
        attn = F.scaled_dot_product_attention(q, k, val.view(B, L + 1, heads, C // heads)
                                              .transpose(1, 2))
        pooled = pool.c_proj(attn.transpose(1, 2).reshape(B, C))
        return {"global": pooled, "dense": pool.c_proj(val[:, 1:])}

    def _vit(self, x: torch.Tensor, raw: bool) -> dict[str, torch.Tensor]:
        v = self.model.visual
        x = v.conv1(x).flatten(2).transpose(1, 2)  # (B, L, width)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
        x = v.transformer(v.ln_pre(x))  # patch dropout is the identity in eval mode
        tokens = v.ln_post(x[:, 1:])  # ln_post on the tokens even if the config pools first
        if v.final_ln_after_pool:
            pooled = v.ln_post(x[:, 0] if v.pool_type == "tok" else x[:, 1:].mean(dim=1))
        else:
            pooled = v.ln_post(x[:, :1])[:, 0] if v.pool_type == "tok" else tokens.mean(dim=1)
        proj = v.proj
        out = {"global": pooled @ proj if proj is not None else pooled,
               "dense": tokens @ proj if proj is not None else tokens}
        if raw:
            out["dense_raw"] = tokens
        return out

    # -- text ----------------------------------------------------------------------------------

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Tokenize, refusing texts that would be truncated (a tiny context length cuts the
        end-of-text token off, silently pooling the wrong position)."""
        ctx_len = self.model.context_length
        encode = getattr(self.tokenizer, "encode", None)
        if encode is not None:
            for text in texts:
                if len(encode(text)) + 2 > ctx_len:
                    raise BackboneError(f"text {text!r} does not fit the text context length "
                                        f"{ctx_len} of {self.model_name!r}")
        tokens = self.tokenizer(list(texts))
        self._warn_unembedded(texts, tokens)
        return tokens

    def _warn_unembedded(self, texts: Sequence[str], tokens: torch.Tensor) -> None:
        """Warn about texts with tokens whose embedding row is all zeros: the shipped TinyCLIP
        keeps only the rows its caption corpus and the methods' prompts use (the pre-trained
        model never trained the others either), so such a word reaches the text tower as
        nothing and its text embedding is quietly meaningless."""
        emb = getattr(getattr(self.model, "text", self.model), "token_embedding", None)
        if not isinstance(emb, torch.nn.Embedding) or tokens.dtype != torch.long:
            return
        ids = tokens.clamp(0, emb.num_embeddings - 1)
        with torch.no_grad():
            empty = (emb.weight[ids.to(emb.weight.device)] == 0).all(-1).cpu() & (tokens > 0)
        bad = [t for t, row in zip(texts, empty, strict=True) if bool(row.any())]
        if bad:
            shown = ", ".join(repr(t) for t in bad[:3]) + (" ..." if len(bad) > 3 else "")
            warnings.warn(f"{self.model_name}: {len(bad)} text(s) hold words its token "
                          f"embedding has no row for ({shown}): they contribute nothing to the "
                          f"text embedding (the shipped TinyCLIP knows only the words of its "
                          f"caption corpus and class prompts)", stacklevel=3)

    @torch.no_grad()
    def encode_text(self, class_names: Sequence[str], templates: Sequence[str] | None = None,
                    name_map: Callable[[str], str] | None = None) -> torch.Tensor:
        """L2-normalised class embeddings ``(C, D)``: for each class the mean of the normalised
        embeddings of ``templates`` (default: this backbone's templates), re-normalised.
        ``name_map`` turns dataset names into prompt words (e.g. ``prompt_name``)."""
        templates = tuple(templates or self.templates)
        if not templates or any("{}" not in t for t in templates):
            raise BackboneError("templates must be non-empty and each contain '{}'")
        names = [name_map(c) if name_map else c for c in class_names]
        prompts = [t.format(n) for n in names for t in templates]
        tokens = self.tokenize(prompts).to(self.device)
        feats = torch.cat([self.model.encode_text(t).float()
                           for t in tokens.split(max(self.batch_size, 1))])
        feats = F.normalize(feats, dim=-1).view(len(names), len(templates), -1).mean(dim=1)
        return F.normalize(feats, dim=-1)

    # -- preprocessing and identity ------------------------------------------------------------

    def transform(self, train: bool = False, augment: str = "crop_flip") -> Callable:
        """torchvision transform for PIL images. Eval: resize to (S, S) -- no centre crop, since
        multi-label objects often sit at the borders -- and normalise. Train: ``crop_flip`` =
        RandomResizedCrop(S, scale 0.5-1) + flip; ``cutout`` = resize + flip + one square hole
        (6-25 % of the image, mean colour, p=0.5); ``none`` = the eval transform."""
        from torchvision import transforms as T

        if augment not in AUGMENTS:
            raise BackboneError(f"augment must be one of {list(AUGMENTS)}, got {augment!r}")
        S = self.image_size
        interp = T.InterpolationMode(self._interpolation)
        tail = [T.ToTensor(), T.Normalize(self.mean, self.std)]
        if not train or augment == "none":
            return T.Compose([T.Resize((S, S), interpolation=interp), *tail])
        if augment == "crop_flip":
            return T.Compose([T.RandomResizedCrop(S, scale=(0.5, 1.0), interpolation=interp),
                              T.RandomHorizontalFlip(), *tail])
        return T.Compose([T.Resize((S, S), interpolation=interp), T.RandomHorizontalFlip(), *tail,
                          T.RandomErasing(p=0.5, scale=(0.0625, 0.25), ratio=(1.0, 1.0),
                                          value=0)])

    def identity(self) -> dict[str, Any]:
        """What determines the features (for cache keys): model, weights, size, precision."""
        dtype = self.autocast_dtype
        extra = {} if self.is_vit else {"batchnorm": "folded"}  # other float rounding
        return {"model": self.model_name, "pretrained": self._source,
                "weights_sha256": self._weights_sha256, "image_size": self.image_size,
                "precision": {None: "fp32", torch.bfloat16: "bf16",
                              torch.float16: "fp16"}[dtype], **extra}


__all__ = ["AUGMENTS", "BackboneError", "FrozenCLIP", "MODEL_CONFIG_DIR", "PRECISIONS",
           "interpolate_pos_embed", "register_model_configs",
           "resnet_dense_tokens", "resnet_feature_map"]
