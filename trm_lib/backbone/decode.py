"""Image batches for the frozen backbone: PIL on the CPU (default) or JPEG decoding on the GPU.

On a fast GPU the image tower of a frozen CLIP is cheap and the CPU side -- JPEG decode and
resize in PIL, one image at a time in DataLoader workers -- becomes the bottleneck of feature
extraction and of live-image training. With ``gpu_decode`` the workers only read file bytes;
the main process decodes the whole batch with nvJPEG (``torchvision.io.decode_jpeg(...,
device="cuda")``) and resizes/augments/normalises on the GPU.

The GPU transform is *derived from* the PIL one (:meth:`trm_lib.backbone.clip.FrozenCLIP.transform`):
the same torchvision ops with the same parameters, applied to uint8 tensors, with ``ToTensor``
replaced by a dtype conversion (both divide by 255). Pixels still differ slightly from PIL's,
so the feature cache keys the decode path (:func:`trm_lib.backbone.features.feature_key`): on the CPU,
torchvision's libjpeg-turbo decode equals PIL's bit for bit, and its antialiased resize is within
one uint8 level of PIL's on smooth (photo-like) content (mean ~0.2 level); where bicubic
overshoot is clipped (upscaled pixel noise) isolated pixels differ by up to ~17 levels. nvJPEG's
IDCT and chroma upsampling add their own +-1-level differences. Files that are not JPEG (PNG,
...) are decoded by torchvision on the CPU and moved. Without CUDA a request falls back to PIL
with a warning (:func:`use_gpu_decode`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:  # pragma: no cover - typing only
    from trm_lib.datasets.base import MultiLabelDataset

__all__ = ["EncodedView", "decode_batch", "decode_images", "image_batches", "tensor_transform",
           "use_gpu_decode"]

_JPEG_MAGIC = b"\xff\xd8\xff"


def use_gpu_decode(requested: bool, device: str | torch.device) -> bool:
    """Whether to decode on the GPU: ``requested`` and ``device`` is CUDA. A request that
    cannot be honoured warns once and falls back to PIL on the CPU (results then match a run
    with ``gpu_decode=false`` exactly)."""
    if not requested:
        return False
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        return True
    warnings.warn(f"gpu_decode requested (train.gpu_decode / --gpu-decode) but the backbone runs "
                  f"on {device}, not CUDA: decoding JPEGs with PIL on the CPU instead",
                  stacklevel=2)
    return False


def tensor_transform(pil_transform: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """The tensor twin of a ``FrozenCLIP.transform()``: every torchvision op kept (they accept
    uint8 ``(3, H, W)`` tensors on any device; resizes antialias like PIL), ``ToTensor``
    replaced by ``ConvertImageDtype(float32)``."""
    from torchvision import transforms as T

    steps = pil_transform.transforms if isinstance(pil_transform, T.Compose) else [pil_transform]
    out = []
    for step in steps:
        if isinstance(step, T.ToTensor):
            out.append(T.ConvertImageDtype(torch.float32))
        elif isinstance(step, T.Resize | T.RandomResizedCrop) and step.antialias is False:
            raise ValueError(f"{step!r}: antialias=False has no PIL equivalent")
        else:
            out.append(step)
    return T.Compose(out)


class EncodedView(torch.utils.data.Dataset):
    """``(file bytes as a uint8 tensor, full labels, index)`` per item: what DataLoader workers
    hand to :func:`decode_batch` (reading bytes is all the CPU does)."""

    def __init__(self, dataset: MultiLabelDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        from trm_lib.datasets.base import DatasetError

        path = Path(self.dataset.image_paths[index])
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise DatasetError(f"{path}: image file not found") from None
        except OSError as err:
            raise DatasetError(f"{path}: cannot read image ({err})") from None
        labels = torch.from_numpy(self.dataset.labels[index].astype(np.float32))
        return torch.frombuffer(bytearray(data), dtype=torch.uint8), labels, index

    @staticmethod
    def collate(items: list[tuple[torch.Tensor, torch.Tensor, int]]
                ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Keep the variable-length byte tensors as a list (they cannot be stacked)."""
        data = [item[0] for item in items]
        return (data, torch.stack([item[1] for item in items]),
                torch.tensor([item[2] for item in items], dtype=torch.long))


def decode_images(data: Sequence[torch.Tensor], device: str | torch.device,
                  names: Sequence[str] | None = None) -> list[torch.Tensor]:
    """Decode encoded images to RGB uint8 ``(3, H, W)`` tensors on ``device``.

    JPEGs go through one batched ``decode_jpeg`` call on ``device`` (nvJPEG on CUDA); other
    formats, and JPEGs nvJPEG rejects (e.g. CMYK), through torchvision's CPU decoders. A file
    no decoder reads raises naming it (``names``: paths for messages)."""
    device = torch.device(device)
    names = list(names) if names is not None else [f"image {i}" for i in range(len(data))]
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its image codecs in favour of TorchCodec, which is not a
        # dependency here; decode_jpeg(device="cuda") still works and is what we use
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision")
        return _decode(data, device, names)


def _decode(data: Sequence[torch.Tensor], device: torch.device, names: list[str]
            ) -> list[torch.Tensor]:
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg

    from trm_lib.datasets.base import DatasetError

    out: list[torch.Tensor | None] = [None] * len(data)
    jpeg = [i for i, d in enumerate(data) if bytes(d[:3].tolist()) == _JPEG_MAGIC]
    jpeg_set = set(jpeg)
    if jpeg:
        try:
            decoded = decode_jpeg([data[i] for i in jpeg], mode=ImageReadMode.RGB, device=device)
            for i, img in zip(jpeg, decoded, strict=True):
                out[i] = img
        except RuntimeError:
            pass  # one bad or unsupported file fails the batch: decode one by one below
    for i, d in enumerate(data):
        if out[i] is not None:
            continue
        img = None
        if i in jpeg_set and device.type == "cuda":
            try:
                img = decode_jpeg(d, mode=ImageReadMode.RGB, device=device)
            except RuntimeError:
                img = None  # e.g. CMYK: the CPU decoder below converts it
        if img is None:
            try:
                img = decode_image(d, mode=ImageReadMode.RGB).to(device)
            except RuntimeError as err:
                raise DatasetError(f"{names[i]}: cannot decode image ({err})") from None
        out[i] = img
    return out  # type: ignore[return-value]


def decode_batch(data: Sequence[torch.Tensor], transform: Callable[[torch.Tensor], torch.Tensor],
                 device: str | torch.device, names: Sequence[str] | None = None) -> torch.Tensor:
    """Decode, transform (a :func:`tensor_transform`) and stack: ``(B, 3, S, S)`` float32 on
    ``device``, the same tensor layout the PIL loader gives."""
    return torch.stack([transform(img) for img in decode_images(data, device, names)])


def image_batches(dataset: MultiLabelDataset, pil_transform: Any,
                  index_batches: Sequence[Sequence[int]], *, device: str | torch.device,
                  gpu_decode: bool = False, num_workers: int = 0,
                  generator: torch.Generator | None = None
                  ) -> Iterator[tuple[torch.Tensor | None, torch.Tensor]]:
    """``(images (B, 3, S, S), index (B,))`` per entry of ``index_batches``, in that order.

    PIL path (default): ``dataset.torch(pil_transform)`` in a DataLoader; images come back on
    the CPU (pinned on CUDA). GPU path: workers read bytes, :func:`decode_batch` runs on
    ``device``. An empty entry yields ``(None, empty index)`` (a rank's share of a batch
    smaller than the world) without touching the loader."""
    from torch.utils.data import DataLoader

    device = torch.device(device)
    batches = [[int(i) for i in b] for b in index_batches]
    if gpu_decode:
        view: Any = EncodedView(dataset)
        collate: Callable | None = EncodedView.collate
        transform = tensor_transform(pil_transform)
    else:
        view, collate = dataset.torch(pil_transform), None
    kwargs = {"collate_fn": collate} if collate is not None else {}
    loader = DataLoader(view, batch_sampler=[b for b in batches if b], num_workers=num_workers,
                        generator=generator, pin_memory=device.type == "cuda" and not gpu_decode,
                        **kwargs)
    it = iter(loader)
    for b in batches:
        if not b:
            yield None, torch.zeros(0, dtype=torch.long)
            continue
        images, _full, index = next(it)
        if gpu_decode:
            names = [str(dataset.image_paths[i]) for i in index.tolist()]
            images = decode_batch(images, transform, device, names)
        yield images, index
