"""Grids as submitit jobs (``trm_lib.experiments.launch``): the ``local`` executor end to end
with real job processes, a job preempted half way that requeues itself and resumes to the
uninterrupted run's numbers, and the ``slurm`` path checked by the sbatch file submitit writes
from the parameters it is given (no Slurm here: the submission command is replaced)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_train import make_world, tiny_config

import trm_lib.experiments as E
import trm_lib.experiments.launch as L
import trm_lib.train as T
from trm_lib.config.run_config import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:  # the job processes inherit these
        mp.setenv("TRM_CACHE", str(tmp_path_factory.mktemp("cache")))
        mp.setenv("OMP_NUM_THREADS", "1")
        yield make_world(root)
    torch.set_num_threads(threads)


def spec_of(world, **base) -> dict:
    fixed = {k: v for k, v in tiny_config(world).flat().items()
             if k.startswith(("data.", "backbone."))}
    fixed.update({"train.epochs": 2, "train.device": "cpu", "train.progress": False, **base})
    return {"name": "tiny", "base": fixed, "grids": {
        "main": {"methods": ["linear_probe"], "proportions": [0.3, 0.7], "seeds": [0, 1]}}}


def test_local_executor_runs_a_grid_of_four_jobs_into_the_one_csv(world, tmp_path):
    runs, csv = tmp_path / "runs", tmp_path / "grid.csv"
    lines: list[str] = []
    grid = L.launch_grid(spec_of(world), csv, executor="local", runs_root=runs, jobs=2,
                         log=lines.append, poll_s=0.5)
    assert not grid.failed
    rows = grid.rows
    test = rows[(rows["split"] == "test") & (rows["metric"] == "mAP")]
    assert len(test) == 4 and set(zip(test["proportion"], test["seed"])) == {
        (0.3, 0), (0.3, 1), (0.7, 0), (0.7, 1)}
    # every number is the job's own run, read back from its folder
    for _, row in test.iterrows():
        assert row["value"] == T.load_result(row["run_dir"]).metrics["test"]["mAP"]
    # the same grid in this process (the processes executor) gives the same table
    ref = E.run_grid(spec_of(world), tmp_path / "ref.csv", runs_root=tmp_path / "ref", log=None)
    ref_test = ref.rows[(ref.rows["split"] == "test") & (ref.rows["metric"] == "mAP")]
    np.testing.assert_allclose(test.sort_values("config_hash")["value"].to_numpy(),
                               ref_test.sort_values("config_hash")["value"].to_numpy(),
                               rtol=1e-6)
    # submitit's job folders: the pickled job, its logs and its result
    jobs = L.read_jobs(runs)
    assert len(jobs) == 4 and all(r.state() == "done" for r in jobs.values())
    for name, rec in jobs.items():
        assert Path(rec.folder) == runs / "submitit" / name
        assert rec.paths().submitted_pickle.exists() and rec.paths().result_pickle.exists()
        assert "best epoch" in rec.paths().stdout.read_text()
    status = L.grid_status(spec_of(world), csv, runs_root=runs)
    assert status["status"].tolist() == ["done"] * 4
    # nothing is submitted again
    lines.clear()
    again = L.launch_grid(spec_of(world), csv, executor="local", runs_root=runs, log=lines.append)
    assert "4 already in" in lines[0] and not any("started" in line for line in lines)
    pd.testing.assert_frame_equal(again.table, grid.table)


def _children(pid: int) -> list[int]:
    kids = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(k) for k in kids.read_text().split()] if kids.exists() else []


def _epoch(out: Path) -> int:
    try:
        return int(torch.load(out / "last.pt", weights_only=True)["epoch"])
    except (FileNotFoundError, RuntimeError, EOFError, KeyError):
        return 0


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_a_job_preempted_half_way_requeues_and_resumes_to_the_uninterrupted_numbers(
        world, tmp_path):
    # live images with augmentation: resuming must restore the RNG streams, and an epoch
    # lasts long enough to be interrupted in the middle
    spec = spec_of(world, **{"train.epochs": 4, "train.batch_size": 4, "train.use_cache": False,
                             "train.augment": "crop_flip", "method.num_heads": 2,
                             "method.pseudo_warmup": 1})
    spec["grids"] = {"main": {"methods": ["trm_ml"], "proportions": [0.5], "seeds": [0]}}
    plan = E.expand(spec)
    full = T.train(plan[0].config, tmp_path / "full", log=None)  # uninterrupted, 1 thread
    epoch_s = float(full.history["seconds"].iloc[1:].median())
    runs = tmp_path / "runs"
    out = runs / T.default_out_dir(plan[0].config).name
    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(grid=L.launch_grid(
        spec, tmp_path / "grid.csv", executor="local", runs_root=runs, jobs=1, log=None,
        poll_s=0.2)))
    thread.start()
    try:
        deadline = time.monotonic() + 300
        while _epoch(out) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5 * epoch_s)  # half way through the next epoch
        controller = int(L.read_jobs(runs)[out.name].job_id)
        task = _children(controller)
        assert len(task) == 1, "the job's task process was not found"
        os.kill(task[0], signal.SIGUSR2)  # what Slurm sends before preemption / time-out
    finally:
        thread.join(timeout=600)
    grid = box["grid"]
    assert not grid.failed
    log = L.read_jobs(runs)[out.name].paths()
    text = log.stdout.read_text() + log.stderr.read_text()
    assert "Requeued job" in text and "resuming" in text, text[-2000:]
    assert 1 <= int(text.split("after epoch ")[1].split()[0]) < 4
    resumed = T.load_result(out)
    np.testing.assert_equal(resumed.metrics, full.metrics)
    np.testing.assert_array_equal(resumed.scores, full.scores)
    cols = [c for c in full.history.columns if c != "seconds"]
    pd.testing.assert_frame_equal(resumed.history[cols], full.history[cols])
    rows = grid.rows
    assert rows[(rows["split"] == "test") & (rows["metric"] == "mAP")]["value"].tolist() == \
        [full.metrics["test"]["mAP"]]


@pytest.fixture
def fake_slurm(monkeypatch, tmp_path):
    """``srun`` "present", and an ``sbatch`` that answers like Slurm without submitting."""
    import submitit

    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 2))
    monkeypatch.setattr(submitit.SlurmExecutor, "_make_submission_command",
                        lambda self, path: [sys.executable, "-c",
                                            "print('Submitted batch job 4242')"])
    monkeypatch.setattr(L, "_slurm_state", lambda folder, job_id: "queued")


def test_slurm_executor_submits_one_array_with_the_asked_resources(world, tmp_path, fake_slurm):
    spec = spec_of(world)
    spec["slurm"] = {"partition": "from-spec", "cpus_per_task": 8, "mem": "8G"}
    runs = tmp_path / "runs"
    plan = E.expand(spec)
    finished = plan[0]  # a finished run is never submitted again
    T.train(finished.config, runs / T.default_out_dir(finished.config).name, log=None)
    grid = L.launch_grid(spec, tmp_path / "grid.csv", executor="slurm", runs_root=runs,
                         wait=False, log=None,
                         slurm={"partition": "gpu", "gpus_per_node": 2, "time": "2:00:00",
                                "mem": "32G", "array_parallelism": 2})
    sbatch = (runs / "submitit" / "slurm" / "4242_submission.sh").read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=2", "#SBATCH --time=120",
                 "#SBATCH --mem=32G", "#SBATCH --array=0-2%2", "#SBATCH --cpus-per-task=8",
                 "#SBATCH --job-name=trm-tiny", "#SBATCH --ntasks-per-node=1",
                 "#SBATCH --signal=USR2@120"):
        assert line in sbatch, line
    assert "--open-mode=append" in sbatch  # a requeued job appends to its log
    assert f"export PYTHONPATH={ROOT}" in sbatch  # the job imports this checkout
    jobs = L.read_jobs(runs)
    assert sorted(r.job_id for r in jobs.values()) == ["4242_0", "4242_1", "4242_2"]
    from submitit.core.utils import DelayedSubmission

    hashes = set()
    for rec in jobs.values():
        job = DelayedSubmission.load(rec.paths().submitted_pickle).function
        assert isinstance(job, L.TrainJob) and Path(job.out_dir) == Path(rec.run_dir)
        assert job.checkpoint().function.out_dir == job.out_dir  # requeues itself
        hashes.add(T.config_hash(job.config))
    assert hashes == {r.hash for r in plan[1:]}
    # the finished run's rows are in the CSV; the others wait in the queue
    assert set(grid.table["config_hash"]) == {finished.hash}
    status = L.grid_status(spec, tmp_path / "grid.csv", runs_root=runs).set_index("run_dir")
    assert sorted(status["status"]) == ["done", "queued", "queued", "queued"]
    # a second launch waits for the queued jobs instead of submitting them twice
    lines: list[str] = []
    L.launch_grid(spec, tmp_path / "grid.csv", executor="slurm", runs_root=runs, wait=False,
                  log=lines.append)
    assert sum("not submitted again" in line for line in lines) == 3
    assert not any("job array" in line for line in lines)


def test_slurm_options_come_from_the_spec_and_the_command_line():
    spec = {"name": "g", "slurm": {"partition": "a", "time": 30}}
    opts = L.SlurmOptions.merged(spec, {"partition": "b", "mem": None})
    assert (opts.partition, opts.time, opts.mem, opts.gpus_per_node) == ("b", 30, None, 1)
    params = L.slurm_parameters(opts, "g")
    assert params.pop("setup") == [f"export PYTHONPATH={ROOT}${{PYTHONPATH:+:$PYTHONPATH}}"]
    assert params == {"job_name": "trm-g", "partition": "b", "gpus_per_node": 1, "time": 30,
                      "ntasks_per_node": 1, "signal_delay_s": 120}
    assert [L.minutes(t) for t in (90, "90", "1:30:00", "2-00", "1-02:03", "0:30", "1:00:30")] \
        == [90, 90, 90, 2880, 1563, 1, 61]
    for bad in ("soon", "0", "1:2:3:4"):
        with pytest.raises(ConfigError, match="slurm time"):
            L.minutes(bad)
    with pytest.raises(ConfigError, match=r"slurm: unknown key\(s\) \['gpus'\]"):
        L.SlurmOptions.merged({"name": "g", "slurm": {"gpus": 2}}, {})
    with pytest.raises(ConfigError, match="array_parallelism"):
        L.SlurmOptions.merged({"name": "g"}, {"array_parallelism": 0})


def test_slurm_without_srun_is_one_clear_error(world, tmp_path, monkeypatch):
    import submitit

    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: -1))
    with pytest.raises(ConfigError, match="--executor slurm: .*srun"):
        L.launch_grid(spec_of(world), tmp_path / "g.csv", executor="slurm",
                      runs_root=tmp_path / "runs", log=None)


def test_a_failed_job_is_reported_with_its_log(world, tmp_path, capsys):
    spec = spec_of(world, **{"data.root": str(tmp_path / "gone")})
    spec["grids"]["main"].update(proportions=[0.5], seeds=[0])
    runs, csv = tmp_path / "runs", tmp_path / "grid.csv"
    grid = L.launch_grid(spec, csv, executor="local", runs_root=runs, log=None, poll_s=0.5)
    [(name, log)] = grid.failed
    assert "gone" in Path(log).read_text()  # the job's traceback names the missing folder
    status = L.grid_status(spec, csv, runs_root=runs)
    assert status[["status", "log"]].values.tolist() == [["failed", log]]
    assert grid.table.empty
    # the command line: the failed job is submitted again, fails again: its log, status 1
    import yaml

    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    argv = ["--spec", str(tmp_path / "spec.yaml"), "--runs-dir", str(runs), "--out", str(csv)]
    capsys.readouterr()
    assert E.cli_experiment([*argv, "--executor", "local"]) == 1
    err = capsys.readouterr().err
    again = L.read_jobs(runs)[name].log()
    assert f"error: run {name} failed; its log: {again}" in err and str(again) != log
    assert E.cli_experiment([*argv, "--status"]) == 0
    out = capsys.readouterr().out
    assert str(again) in out and out.strip().endswith("1 failed")


def test_local_jobs_get_one_visible_gpu_each(monkeypatch, tmp_path):
    """submitit hides every GPU from a local job it was not given one for."""
    cfg = tiny_config(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert L.local_gpus(cfg.with_overrides({"train.device": "auto"})) == [0, 1]
    assert L.local_gpus(cfg) == []  # tiny_config trains on the CPU
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert L.local_gpus(cfg.with_overrides({"train.device": "cuda"})) == [3, 5]
    ex = L._executor("local", tmp_path, "", None, run="r", gpu=5)
    assert ex.parameters["gpus_per_node"] == 1 and ex.parameters["visible_gpus"] == (5,)
    assert "gpus_per_node" not in L._executor("local", tmp_path, "", None, run="r").parameters
