"""What the machine can do, measured in the process that uses it: the GEMM peak at the shapes a
training step multiplies, a step's matrix-product FLOPs, and peak resident memory.

A head's throughput means little as images per second alone: the same code is 40 % or 80 % of
what a CPU can do depending on the CPU. :func:`record_gemms` lists the matrix products of one
training step (forward and backward, with their shapes), :func:`gemm_peak` times each of those
shapes alone (and a large square one) in the step's thread setting, and the best of them is the
peak a step's FLOP rate is compared with (``python -m trm_lib bench train``).
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_GEMMS = {"mm": (0, 1), "addmm": (1, 2), "bmm": (0, 1), "baddbmm": (1, 2)}


@dataclass(frozen=True)
class Gemm:
    """One matrix-product shape: ``batch`` products of (m, k) x (k, n)."""

    batch: int
    m: int
    k: int
    n: int

    @property
    def flops(self) -> int:
        return 2 * self.batch * self.m * self.k * self.n


class _GemmRecorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.gemms: Counter[Gemm] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        name = func.overloadpacket.__name__
        if name in _GEMMS:
            i, j = _GEMMS[name]
            a, b = args[i].shape, args[j].shape
            batch = a[0] if len(a) == 3 else 1
            self.gemms[Gemm(int(batch), int(a[-2]), int(a[-1]), int(b[-1]))] += 1
        return func(*args, **(kwargs or {}))


def record_gemms(step: Callable[[], Any]) -> Counter[Gemm]:
    """The matrix products (``mm``/``addmm``/``bmm``/``baddbmm``, forward and backward) one call
    of ``step`` runs, with how often each shape occurs."""
    rec = _GemmRecorder()
    with rec:
        step()
    return rec.gemms


def step_flops(gemms: Counter[Gemm]) -> int:
    return sum(g.flops * n for g, n in gemms.items())


def clock(device: torch.device | str = "cpu") -> tuple[Callable[[], float], str]:
    """The timer for compute rates and its name: this thread's CPU time when torch computes on
    the CPU in one thread (so a machine shared with other jobs still measures the code, not the
    scheduler), else wall time."""
    if torch.device(device).type == "cpu" and torch.get_num_threads() == 1:
        return time.thread_time, "thread CPU time"
    return time.perf_counter, "wall time"


def _time_gemm(g: Gemm, dtype: torch.dtype, device: torch.device, budget: float = 0.05
               ) -> float:
    """Seconds per product of shape ``g`` in ``dtype`` (best of repeated timings)."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(g.batch, g.m, g.k, generator=gen).to(device, dtype)
    b = torch.randn(g.batch, g.k, g.n, generator=gen).to(device, dtype)
    fn = (lambda: torch.mm(a[0], b[0])) if g.batch == 1 else (lambda: torch.bmm(a, b))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    now = clock(device)[0]
    fn()
    sync()
    best, spent, reps = float("inf"), 0.0, 1
    while spent < budget:
        t0 = now()
        for _ in range(reps):
            fn()
        sync()
        dt = now() - t0
        best, spent = min(best, dt / reps), spent + dt
        reps = min(reps * 2, 64)
    return best


#: a large square product, so the peak is the machine's even where the step's shapes are small
REFERENCE = Gemm(1, 1024, 1024, 1024)


def gemm_peak(gemms: Counter[Gemm] | list[Gemm], dtype: torch.dtype = torch.float32,
              device: torch.device | str = "cpu", top: int = 8) -> dict[str, Any]:
    """The GEMM rate in ``dtype`` at the step's shapes: each of the ``top`` shapes carrying the
    most FLOPs timed alone, and :data:`REFERENCE`. Returns ``peak`` (FLOP/s, the best of them),
    ``shape`` (which), ``at_shapes`` (the step's matrix products at their isolated rates: the
    time they need in the step if nothing else ran, in seconds per step)."""
    device = torch.device(device)
    counts = Counter(gemms)
    ranked = sorted(counts, key=lambda g: -g.flops * counts[g])[:top]
    rates = {g: g.flops / _time_gemm(g, dtype, device) for g in [*ranked, REFERENCE]}
    best = max(rates, key=rates.get)
    seconds = sum(counts[g] * g.flops / rates[g] for g in ranked)
    rest = sum(counts[g] * g.flops for g in counts if g not in rates)
    return {"peak": rates[best], "shape": best,
            "at_shapes": seconds + rest / rates[best], "rates": rates}


def bf16_supported(device: torch.device | str = "cpu") -> bool:
    """bf16 matrix products in hardware: CUDA with bf16, or a CPU with AVX-512 BF16 or AMX."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    with contextlib.suppress(OSError):
        flags = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines()
                      if ln.startswith("flags")), "")
        return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))
    return False


# ---------------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------------

def _status_kib(field: str) -> int | None:
    with contextlib.suppress(OSError, StopIteration, ValueError):
        line = next(ln for ln in Path("/proc/self/status").read_text().splitlines()
                    if ln.startswith(f"{field}:"))
        return int(line.split()[1])
    return None


def rss_mib() -> float | None:
    """Resident memory of this process now (MiB), None where /proc is missing."""
    kib = _status_kib("VmRSS")
    return None if kib is None else kib / 1024


@contextlib.contextmanager
def peak_rss() -> Iterator[dict[str, float | None]]:
    """Peak resident memory (MiB) of this process *within* the block: the kernel's high-water
    mark is reset on entry (``/proc/self/clear_refs``) and read on exit. ``before`` is the
    resident memory on entry; ``peak`` is None where the mark cannot be reset (not Linux)."""
    out: dict[str, float | None] = {"before": rss_mib(), "peak": None}
    reset = False
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
        reset = True
    yield out
    hwm = _status_kib("VmHWM")
    out["peak"] = hwm / 1024 if reset and hwm is not None else None


__all__ = ["Gemm", "REFERENCE", "bf16_supported", "clock", "gemm_peak", "peak_rss", "record_gemms",
           "rss_mib", "step_flops"]
