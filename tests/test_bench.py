"""``python -m trm_lib bench``: ``bench all`` writes every benchmark's output under a machine
line and keeps the recorded figures; ``bench train`` prints a cached and a live epoch time and
their ratio, each method's share of the GEMM peak (its FLOP count checked against torch's own
counter) and peak resident memory."""

from __future__ import annotations

import re

import pytest
import torch

from trm_lib.tools import bench
from trm_lib.utils.errors import ConfigError

TINY = {"synth": ["--size", "64", "--n", "3"],
        "train": ["--images", "8", "--batch", "4", "--classes", "5", "--jpeg-size", "96x64",
                  "--steps", "2"]}


def test_bench_all_writes_the_file_with_a_machine_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "ALL_ARGS", TINY)
    out = tmp_path / "BENCHMARKS.md"
    assert bench.cli(["all", "--out", str(out), "--only", "synth,train"]) == 0
    text = out.read_text()
    machine = next(line for line in text.splitlines() if line.startswith("Machine: "))
    assert f"torch {torch.__version__}" in machine and " cores (" in machine
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", machine)
    assert "## synth" in text and "`python -m trm_lib bench synth --size 64 --n 3`" in text
    assert "## features" not in text
    # the train section carries both epoch times and their ratio, consistent with each other
    live = float(re.search(r"live-backbone epoch\s+([\d.]+) s", text).group(1))
    cached = float(re.search(r"cached-feature epoch\s+([\d.]+) s", text).group(1))
    ratio = float(re.search(r"live / cached epoch time: ([\d.]+)x", text).group(1))
    assert ratio == pytest.approx(live / cached, rel=0.1, abs=0.1)
    assert "wrote" in capsys.readouterr().out
    # the head's share of the fp32 peak measured in the same run, and peak memory
    peak = float(re.search(r"fp32 ([\d.]+) GFLOP/s", text).group(1))
    row = re.search(r"\n  trm_ml +([\d.]+) +(\d+) +([\d.]+) +([\d.]+) +([\d.]+)%", text)
    assert row and "dualcoop" in text and peak > 0
    ms, flops, rate, share = (float(row.group(i)) for i in (1, 3, 4, 5))
    assert rate == pytest.approx(flops / ms * 1e3, rel=0.02, abs=0.2)
    assert share == pytest.approx(100 * rate / peak, rel=0.02, abs=0.2)
    assert re.search(r"peak resident memory: building the feature store (\d+ MiB \(\+\d+\)|n/a)"
                     r", cached-feature epoch (\d+ MiB \(\+\d+\)|n/a)", text)


def test_bench_all_keeps_the_recorded_figures(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "ALL_ARGS", TINY)
    out = tmp_path / "BENCHMARKS.md"
    kept = f"{bench.RECORDED}\n\n## Recorded\n\nshipped figure: 1.23\n"
    out.write_text(f"# old generated part\n\n{kept}")
    bench.cli(["all", "--out", str(out), "--only", "synth"])
    text = out.read_text()
    assert "old generated part" not in text and "## synth" in text
    assert text.endswith(kept) and text.count(bench.RECORDED) == 1


def test_gemm_flops_match_torch_flop_counter():
    """The step's matrix-product FLOPs as hardware.record_gemms counts them equal torch's
    FlopCounterMode on a forward + backward of matmul, linear and bmm."""
    from torch.utils.flop_counter import FlopCounterMode

    from trm_lib.train import hardware

    lin = torch.nn.Linear(24, 40)
    x = torch.randn(3, 7, 24, requires_grad=True)
    w = torch.randn(3, 40, 5)

    def step():
        (torch.bmm(lin(x), w).square().sum() + (x[0] @ x[0].T).sum()).backward()

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    assert hardware.step_flops(hardware.record_gemms(step)) == counter.get_total_flops()


def test_bench_all_names_an_unknown_benchmark(tmp_path):
    with pytest.raises(ConfigError, match="nosuch"):
        bench.cli(["all", "--out", str(tmp_path / "b.md"), "--only", "nosuch"])


def test_bench_times_the_k_nn_product_at_its_training_size():
    """The bench fills the instance memory's rings as training at p >= 0.5 leaves them, since
    the k-NN product skips empty slots and a few bench images would leave it nearly empty."""
    import importlib

    from torch import nn

    from trm_lib.core.prototypes import InstanceMemory

    B = importlib.import_module("trm_lib.train.bench")  # the package exports bench(), a function

    holder = nn.Module()
    holder.mem = InstanceMemory(num_classes=3, dim=8, size=16, k=2)
    B._fill_rings(holder)
    for name in holder.mem.POLARITIES:
        feats, index, _ = holder.mem._buffers_of(name)
        assert holder.mem._used_slots(index) == 16 and bool((index >= 10**6).all())
        torch.testing.assert_close(feats.norm(dim=-1), torch.ones(3, 16))
    _, valid = holder.mem.score(torch.randn(4, 3, 8), torch.arange(4))
    assert bool(valid.all())
