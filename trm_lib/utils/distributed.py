"""Multi-process training and feature extraction: one process per GPU, launched by ``torchrun``.

``torchrun --nproc_per_node=N -m trm_lib train ...`` (or ``features ...``) starts N copies of the
same command with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``
set. :func:`init_distributed` turns that environment into a process group (NCCL for CUDA
tensors and gloo for CPU ones on a GPU machine, gloo alone without CUDA); without those
variables every helper here is a no-op that returns its input, so single-process code pays one
``dist.is_initialized()`` check and nothing else.

The design goal is *equivalence*: N processes compute what one process computes, in the same
order, so results can be compared with a single-process run and resumed on a different N.

- :func:`shard_indices` / :func:`shard_batches` split an ordered index list into contiguous,
  near-equal blocks (``np.array_split``), with no padding or duplicated samples
  (``torch.utils.data.DistributedSampler`` pads, which changes what a mean over a split means);
  concatenating the blocks in rank order gives the list back, so gathered results are in the
  single-process order.
- :func:`all_gather_tensor` / :func:`all_gather_array` / :func:`gather_tensor` move
  variable-length results (scores of a shard, feature rows) between ranks.
- :func:`gather_outputs` gathers a method's outputs *with a gradient path back to this rank's
  slice*, and :func:`average_gradients` averages gradients, so a loss computed on the gathered
  global batch trains exactly like the single-process loss (see :func:`gather_outputs`).
"""

from __future__ import annotations

import atexit
import contextlib
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from trm_lib.utils.errors import UserError

#: the variables ``torchrun`` sets for every worker (all needed for ``init_method="env://"``)
ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")

__all__ = ["DistInfo", "DistributedError", "ENV_KEYS", "all_gather_array", "all_gather_object",
           "all_gather_tensor", "average_gradients", "barrier", "broadcast_module",
           "broadcast_object", "env_info", "gather_outputs", "gather_tensor", "info",
           "init_distributed", "is_distributed", "is_main", "local_device", "main_first",
           "rank", "shard_batches", "shard_indices", "shard_sizes", "teardown", "world_size"]


class DistributedError(UserError, RuntimeError):
    """The launch environment or a collective's input is inconsistent; the message says which."""


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size`` processes, ``local_rank`` on its node
    (its GPU index), and the backend once a process group exists (None before/without one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


_OWNED = False  # whether this module created the process group (and so must destroy it)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise DistributedError(f"environment variable {name}={raw!r} is not an integer") from None


def env_info() -> DistInfo:
    """The launch environment as ``torchrun`` set it, without initialising anything."""
    return DistInfo(_env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0))


def is_distributed() -> bool:
    """True when a process group with more than one process is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def info() -> DistInfo:
    """This process's :class:`DistInfo` (the single-process default when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(dist.get_rank(), dist.get_world_size(), env_info().local_rank,
                    str(dist.get_backend()))


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Rank 0, the only process that writes files and prints (always True single-process)."""
    return rank() == 0


def local_device(name: str = "auto") -> torch.device:
    """The device this process should use for ``name`` (``auto | cpu | cuda | cuda:N``).

    Under a multi-process launch ``auto`` and ``cuda`` mean ``cuda:LOCAL_RANK`` (one GPU per
    process); an explicit ``cuda:N`` would put every rank on the same GPU, which NCCL refuses,
    so it is an error. Single-process: ``auto`` is ``cuda`` if available, else ``cpu``."""
    env = env_info()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type != "cuda" or not env.active:
        return device
    if device.index is not None:
        raise DistributedError(f"device {name!r} under a {env.world_size}-process launch would "
                               f"put every rank on one GPU; use 'auto' or 'cuda' (rank r takes "
                               f"cuda:LOCAL_RANK)")
    if env.local_rank >= torch.cuda.device_count():
        raise DistributedError(f"LOCAL_RANK={env.local_rank} but only "
                               f"{torch.cuda.device_count()} CUDA device(s) are visible")
    return torch.device("cuda", env.local_rank)


def init_distributed(device: str | torch.device | None = None, backend: str | None = None,
                     timeout_s: float = 1800.0) -> DistInfo:
    """Initialise the process group from the ``torchrun`` environment; idempotent.

    Without a multi-process environment (``WORLD_SIZE`` unset or 1) this returns the
    single-process :class:`DistInfo` and does nothing. ``backend`` defaults to
    ``"cpu:gloo,cuda:nccl"`` when CUDA is available (collectives dispatch on the tensor's
    device, so CPU scores and GPU features can both be gathered) and to ``"gloo"`` otherwise;
    ``TRM_DIST_BACKEND`` overrides it. With NCCL the process first binds ``cuda:LOCAL_RANK``.
    ``device`` only selects the backend default (a CPU run on a GPU machine needs no NCCL).
    The group is destroyed at interpreter exit (or by :func:`teardown`)."""
    global _OWNED
    if dist.is_available() and dist.is_initialized():
        return info()
    env = env_info()
    if not env.active:
        return DistInfo()
    if not dist.is_available():
        raise DistributedError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    missing = [k for k in ENV_KEYS if not os.environ.get(k)]
    if missing:
        raise DistributedError(f"WORLD_SIZE={env.world_size} but {', '.join(missing)} "
                               f"{'is' if len(missing) == 1 else 'are'} not set; launch with "
                               f"torchrun (python -m torch.distributed.run)")
    if not 0 <= env.rank < env.world_size:
        raise DistributedError(f"RANK={env.rank} outside [0, WORLD_SIZE={env.world_size})")
    want_cuda = torch.cuda.is_available() and (
        device is None or str(device) == "auto" or torch.device(device).type == "cuda")
    backend = backend or os.environ.get("TRM_DIST_BACKEND") or (
        "cpu:gloo,cuda:nccl" if want_cuda else "gloo")
    kwargs: dict[str, Any] = {}
    if "nccl" in backend:
        gpu = local_device("cuda")
        torch.cuda.set_device(gpu)
        kwargs["device_id"] = gpu  # binds NCCL to this rank's GPU (barrier needs no guess)
    dist.init_process_group(backend, init_method="env://", rank=env.rank,
                            world_size=env.world_size, timeout=timedelta(seconds=timeout_s),
                            **kwargs)
    if not _OWNED:
        atexit.register(teardown)
    _OWNED = True
    return info()


def teardown() -> None:
    """Destroy the process group this module created (no-op otherwise, and idempotent)."""
    global _OWNED
    if _OWNED and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _OWNED = False


# ---------------------------------------------------------------------------------------------
# Control flow
# ---------------------------------------------------------------------------------------------

def barrier() -> None:
    """Wait for every rank (no-op single-process)."""
    if is_distributed():
        dist.barrier()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Run the body on rank 0 first, then on the other ranks: for work that writes a shared
    cache on first use (generated worlds, label masks), so only one process ever writes it and
    the others read the finished files."""
    if not is_distributed():
        yield
        return
    if not is_main():
        dist.barrier()
    try:
        yield
    finally:
        if is_main():
            dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (picklable objects; no-op single-process)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` single-process)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


# ---------------------------------------------------------------------------------------------
# Sharding
# ---------------------------------------------------------------------------------------------

def shard_sizes(n: int, world: int | None = None) -> list[int]:
    """Sizes of the ``world`` contiguous blocks of ``n`` items (``np.array_split``: the first
    ``n % world`` blocks hold one more; trailing blocks are empty when ``n < world``)."""
    world = world_size() if world is None else world
    base, extra = divmod(int(n), int(world))
    return [base + (r < extra) for r in range(world)]


def shard_indices(indices: Sequence[int] | np.ndarray, rank_: int | None = None,
                  world: int | None = None) -> np.ndarray:
    """This rank's contiguous block of ``indices`` (all of them single-process).

    Deterministic from (indices, rank, world) alone, so every rank agrees without talking;
    blocks in rank order concatenate back to ``indices``."""
    indices = np.asarray(indices)
    rank_ = rank() if rank_ is None else rank_
    world = world_size() if world is None else world
    sizes = shard_sizes(len(indices), world)
    lo = sum(sizes[:rank_])
    return indices[lo:lo + sizes[rank_]]


def shard_batches(order: Sequence[int] | np.ndarray, batch_size: int, rank_: int | None = None,
                  world: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[(global_batch, local_part), ...]`` for an epoch's ``order``.

    The *global* batches are exactly the single-process ones (``order`` cut every
    ``batch_size`` rows), and each rank takes its :func:`shard_indices` block of every global
    batch -- so the per-rank batch is ``batch_size / world`` (sizes differ by at most one; a rank
    gets an empty part only when a batch has fewer rows than ranks). Give every rank the same
    ``order`` (e.g. a permutation seeded by (seed, epoch)) and the ranks cover each batch once.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = np.asarray(order)
    return [(order[s:s + batch_size], shard_indices(order[s:s + batch_size], rank_, world))
            for s in range(0, len(order), batch_size)]


# ---------------------------------------------------------------------------------------------
# Gathering results
# ---------------------------------------------------------------------------------------------

def _comm_device(t: torch.Tensor) -> torch.device:
    """Where a collective on ``t`` runs: its own device if the backend serves it, else the
    other one (a gloo-only group cannot take CUDA tensors, an NCCL-only one CPU tensors)."""
    backend = str(dist.get_backend())
    if t.device.type == "cuda" and "nccl" not in backend:
        return torch.device("cpu")
    if t.device.type == "cpu" and "gloo" not in backend:
        return torch.device("cuda", torch.cuda.current_device())
    return t.device


def all_gather_tensor(t: torch.Tensor, sizes: Sequence[int] | None = None) -> torch.Tensor:
    """Concatenate every rank's ``t`` along dim 0, in rank order; ranks may hold different row
    counts (``sizes``, one per rank; gathered first when not given). Trailing shape and dtype
    must agree. Single-process: ``t`` itself. The result lives on ``t``'s device."""
    if not is_distributed():
        return t
    world = world_size()
    if sizes is None:
        sizes = [int(s) for s in all_gather_object(int(t.shape[0]))]
    sizes = [int(s) for s in sizes]
    if len(sizes) != world or sizes[rank()] != t.shape[0]:
        raise DistributedError(f"all_gather_tensor: sizes {sizes} do not fit this rank "
                               f"({rank()}, {t.shape[0]} rows, world {world})")
    dev = _comm_device(t)
    longest = max(sizes) if sizes else 0
    send = t.detach().to(dev).contiguous()
    if send.shape[0] < longest:
        pad = send.new_zeros((longest - send.shape[0], *send.shape[1:]))
        send = torch.cat([send, pad])
    bufs = [torch.empty_like(send) for _ in range(world)]
    dist.all_gather(bufs, send)
    return torch.cat([b[:s] for b, s in zip(bufs, sizes, strict=True)]).to(t.device)


def gather_tensor(t: torch.Tensor, sizes: Sequence[int], dst: int = 0) -> torch.Tensor | None:
    """Like :func:`all_gather_tensor` but only rank ``dst`` receives (less traffic for bulk
    data such as feature rows); other ranks get None. ``sizes`` must be given."""
    if not is_distributed():
        return t
    world = world_size()
    sizes = [int(s) for s in sizes]
    if len(sizes) != world or sizes[rank()] != t.shape[0]:
        raise DistributedError(f"gather_tensor: sizes {sizes} do not fit this rank "
                               f"({rank()}, {t.shape[0]} rows, world {world})")
    dev = _comm_device(t)
    longest = max(sizes)
    send = t.detach().to(dev).contiguous()
    if send.shape[0] < longest:
        send = torch.cat([send, send.new_zeros((longest - send.shape[0], *send.shape[1:]))])
    bufs = [torch.empty_like(send) for _ in range(world)] if rank() == dst else None
    dist.gather(send, bufs, dst=dst)
    if bufs is None:
        return None
    return torch.cat([b[:s] for b, s in zip(bufs, sizes, strict=True)]).to(t.device)


def all_gather_array(a: np.ndarray) -> np.ndarray:
    """:func:`all_gather_tensor` for numpy arrays (e.g. the scores of an evaluation shard)."""
    if not is_distributed():
        return a
    return all_gather_tensor(torch.from_numpy(np.ascontiguousarray(a))).numpy()


# ---------------------------------------------------------------------------------------------
# Training: outputs with a gradient path, gradient averaging, state broadcast
# ---------------------------------------------------------------------------------------------

class _GatherRows(torch.autograd.Function):
    """All-gather along dim 0 whose backward keeps this rank's slice of the gradient, times the
    world size, without communication (valid because every rank computes the same function of
    the gathered tensor; see :func:`gather_outputs`)."""

    @staticmethod
    def forward(ctx: Any, local: torch.Tensor, sizes: tuple[int, ...]) -> torch.Tensor:
        r = rank()
        ctx.lo, ctx.hi, ctx.world = sum(sizes[:r]), sum(sizes[:r + 1]), len(sizes)
        return all_gather_tensor(local, sizes)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad[ctx.lo:ctx.hi] * ctx.world, None


def gather_outputs(out: dict[str, Any], sizes: Sequence[int]) -> dict[str, Any]:
    """Every tensor of a method's output dict gathered over ranks along the batch dim (rank
    order = global batch order); other values pass through. Single-process: ``out`` itself.

    This is how a loss that is *not* a sum over samples trains exactly as in one process: the
    multimodal contrastive term compares the anchors of the whole batch, and the memory bank
    and pseudo-label buffer are updated from the whole batch. Every rank computes the same
    ``method.loss`` on the gathered global batch (so the loss value, the logs and every
    per-sample state update agree across ranks and with a single-process run), and the
    backward sends each rank its own slice of ``dL/d(out)``, scaled by the world size W.
    After :func:`average_gradients`, a parameter reached through the outputs receives
    ``sum_r W * (local part) / W`` = the full-batch gradient, and one reached directly by the
    loss (e.g. learnable prompts used as text prototypes) receives the mean of W identical
    copies = itself. Exact up to floating-point summation order.
    """
    if not is_distributed():
        return out
    sizes = tuple(int(s) for s in sizes)
    local = sizes[rank()]
    gathered: dict[str, Any] = {}
    for key, value in out.items():
        if not isinstance(value, torch.Tensor):
            gathered[key] = value
            continue
        if value.dim() == 0 or value.shape[0] != local:
            raise DistributedError(f"method output {key!r} has shape {tuple(value.shape)}; "
                                   f"under torchrun every output tensor must be batch-major "
                                   f"({local} rows on rank {rank()})")
        gathered[key] = _GatherRows.apply(value, sizes)
    return gathered


def average_gradients(params: Iterable[nn.Parameter]) -> None:
    """All-reduce and average ``.grad`` of ``params`` over ranks (one flat buffer per device
    and dtype). A parameter whose gradient is None on every rank stays None (optimizers skip
    it, weight decay included, as in a single process); None on some ranks counts as zero."""
    if not is_distributed():
        return
    params = [p for p in params if p.requires_grad]
    world = world_size()
    groups: dict[tuple[torch.device, torch.dtype], list[nn.Parameter]] = {}
    for p in params:
        groups.setdefault((p.device, p.dtype), []).append(p)
    for (device, dtype), group in groups.items():
        flags = torch.tensor([p.grad is not None for p in group], dtype=dtype, device=device)
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                          for p in group] + [flags])
        dev = _comm_device(flat)
        flat = flat.to(dev)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat = flat.to(device)
        has_grad = flat[-len(group):] > 0
        offset = 0
        for p, keep in zip(group, has_grad.tolist(), strict=True):
            n = p.numel()
            if keep:
                p.grad = (flat[offset:offset + n] / world).view_as(p).clone()
            else:
                p.grad = None
            offset += n


@torch.no_grad()
def broadcast_module(module: nn.Module, src: int = 0, params: bool = True,
                     buffers: bool = True) -> None:
    """Copy ``module``'s parameters and/or buffers from rank ``src`` to every rank, in place.

    The trainer calls it once before training (so every rank starts from rank 0's weights
    whatever each rank's initialisation consumed) and for the buffers after every epoch (the
    memory bank and pseudo-label buffer: identical by construction, this makes them identical
    by fiat, e.g. against non-deterministic GPU kernels)."""
    if not is_distributed():
        return
    tensors = ([p.data for p in module.parameters()] if params else []) + \
              ([b for b in module.buffers()] if buffers else [])
    for t in tensors:
        dev = _comm_device(t)
        buf = t if dev == t.device else t.to(dev)
        dist.broadcast(buf, src=src)
        if buf is not t:
            t.copy_(buf)
