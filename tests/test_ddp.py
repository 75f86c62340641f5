"""Data parallelism: two CPU processes under torchrun (gloo) match one process with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from trainer_helpers import ddp_trainer, params_of

from course_lib.distributed import (
    DistInfo,
    all_gather_objects,
    all_reduce_mean,
    gradient_averaging_check,
    init_distributed,
    max_replica_difference,
)
from course_lib.serve import free_port

HELPERS = Path(__file__).with_name("trainer_helpers.py")
ROOT = HELPERS.parent.parent  # this checkout, so the subprocesses import its course_lib
DDP_TOL = 1e-5  # absolute: the gradient mean is summed in another order (per-rank means, then all-reduce)
TORCHRUN_TIMEOUT = 150  # seconds for the two-process run, start-up included


def test_one_process_needs_no_process_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info = init_distributed("cpu")
    assert info == DistInfo() and not info.enabled and info.is_main
    t = torch.tensor([1.0, 3.0])
    assert all_reduce_mean(t, info) is t and all_gather_objects("x", info) == ["x"]
    assert max_replica_difference(torch.nn.Linear(2, 2), info) == 0.0
    with pytest.raises(RuntimeError, match="torchrun"):
        gradient_averaging_check(torch.nn.Linear(2, 2), lambda: torch.zeros(()), info)


def test_half_set_torchrun_environment_is_an_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(RuntimeError, match="start the script with torchrun"):
        init_distributed("cpu")


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path):
    global_batch, steps = 16, 6
    # one process: batch 16, no accumulation
    single = ddp_trainer(tmp_path / "single", global_batch, steps, accum=1, world_size=1)
    single.fit()

    # two processes x 2 micro-batches of 4: exercises DistributedSampler sharding, no_sync and the all-reduce
    result = tmp_path / "ddp.pt"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1",
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
        str(HELPERS), "ddp", str(tmp_path / "ddp"), str(global_batch), str(steps), "2", str(result),
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(HELPERS.parent), str(ROOT)]))
    proc = subprocess.run(cmd, env=env, timeout=TORCHRUN_TIMEOUT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp_params = torch.load(result, weights_only=True)

    for k, v in params_of(single.model).items():
        torch.testing.assert_close(ddp_params[k], v, atol=DDP_TOL, rtol=0, msg=k)
    # rank 0 logged the loss averaged over both ranks: the same numbers the single process saw
    from course_lib.checkpoint import load_checkpoint

    ddp_checkpoint = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert ddp_checkpoint["replica_max_diff"] == 0.0  # both ranks ended with bit-identical weights
    ddp_history = ddp_checkpoint["history"]
    for a, b in zip(ddp_history, single.history, strict=True):
        assert a["step"] == b["step"]
        for key in ("train_loss", "val_loss"):
            if key in b:
                assert a[key] == pytest.approx(b[key], abs=DDP_TOL)
    assert ddp_history[1]["samples_per_s"] > 0


@pytest.mark.slow
def test_ddp_self_check_shows_gradients_averaged_and_weights_identical():
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--nnodes",
        "1",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        "-m",
        "course_lib.distributed",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run(cmd, env=env, timeout=TORCHRUN_TIMEOUT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = {
        line.split()[0]: float(line.split()[1])
        for line in proc.stdout.splitlines()
        if line.split()
        and line.split()[0]
        in ("ranks_local_spread", "synced_minus_mean", "synced_spread", "weights_spread_after_3_steps")
    }
    assert len(report) == 4, proc.stdout
    # The ranks' own gradients differ (different batches). Without averaging, the synced gradient would
    # be the local one: synced_spread would equal ranks_local_spread and synced_minus_mean be half of it.
    assert report["ranks_local_spread"] > 1e-3
    assert report["synced_minus_mean"] < DDP_TOL and report["synced_spread"] == 0.0
    assert report["weights_spread_after_3_steps"] == 0.0
