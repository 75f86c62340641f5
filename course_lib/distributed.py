"""Data-parallel training across processes: what `torchrun` sets up and what the Trainer needs from it.

One process per GPU (or per CPU worker) runs the same script. `torchrun` starts them and tells each
one who it is through environment variables:

    RANK         this process's index among all processes (0 .. WORLD_SIZE-1)
    LOCAL_RANK   its index on this machine (which GPU it drives)
    WORLD_SIZE   how many processes take part
    MASTER_ADDR / MASTER_PORT   where process 0 listens so the others can find it

One machine, 8 GPUs::

    torchrun --standalone --nproc_per_node 8 -m course_lib pretrain --config configs/pretrain_tiny.json

Two machines with 8 GPUs each (run on both; ``--node_rank`` is 0 on the first, 1 on the second, and
``--rdzv_endpoint`` names a host:port on the first machine that the second can reach)::

    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 \\
        --rdzv_backend c10d --rdzv_endpoint 10.0.0.1:29500 -m course_lib pretrain --config ...

Two CPU processes on a laptop (gloo backend), the way the tests run it::

    python -m torch.distributed.run --nproc_per_node 2 --master_addr 127.0.0.1 --master_port 29511 script.py

With no such variables set, everything here is a no-op and the script runs as one ordinary process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Who this process is in a (possibly one-process) training run."""

    rank: int = 0  # global index of this process
    local_rank: int = 0  # index on this machine: the GPU it drives
    world_size: int = 1  # number of processes in the run
    backend: str | None = None  # "nccl" (CUDA) or "gloo" (CPU); None when not distributed
    owns_group: bool = False  # True when this process created the process group (and must destroy it)

    @property
    def enabled(self) -> bool:
        """True when more than one process takes part (DDP wrapping and all-reduces are needed)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, logs and the progress bar; the others stay quiet."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """True when the torchrun environment variables say this process is part of a multi-process run."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device_type: str = "cpu") -> DistInfo:
    """Join the process group that torchrun describes, or return a one-process DistInfo.

    Uses NCCL when the processes drive CUDA GPUs and gloo otherwise (CPU). A group that already
    exists (a notebook or a caller set it up) is reused and left for its owner to destroy.
    """
    if dist.is_available() and dist.is_initialized():
        return DistInfo(
            rank=dist.get_rank(),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
            world_size=dist.get_world_size(),
            backend=str(dist.get_backend()),
            owns_group=False,
        )
    if not launched_by_torchrun():
        return DistInfo()
    missing = [k for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(
            f"WORLD_SIZE={os.environ['WORLD_SIZE']} is set but {missing} are not; "
            "start the script with torchrun (python -m torch.distributed.run ...) rather than by hand"
        )
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed; install a standard torch wheel")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if device_type == "cuda":
        backend = "nccl"
        torch.cuda.set_device(local_rank)  # before init, so NCCL binds each process to its own GPU
    elif device_type == "cpu":
        backend = "gloo"
    else:
        raise RuntimeError(
            f"distributed training on device type {device_type!r} is not supported; use CUDA GPUs or the CPU"
        )
    dist.init_process_group(backend=backend)
    return DistInfo(rank, local_rank, dist.get_world_size(), backend, owns_group=True)


def destroy_distributed(info: DistInfo) -> None:
    """Tear the process group down, but only if this process created it."""
    if info.owns_group and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The mean of ``t`` over all processes (``t`` itself on one process). Every rank must call it."""
    if not info.enabled:
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / info.world_size


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """One picklable object from every rank, as a list indexed by rank. Every rank must call it."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    """Wait until every rank gets here (no-op on one process)."""
    if info.enabled:
        dist.barrier()


# ----------------------------------------------------------------------------- checking that DDP did its job


def max_replica_difference(module: torch.nn.Module, info: DistInfo) -> float:
    """Largest |w - w on rank 0| over every parameter of ``module`` and every rank (0.0 on one process).

    Data parallelism keeps one model: every rank must hold the same weights after every step. Every
    rank must call this (it broadcasts rank 0's weights and takes the maximum over ranks).
    """
    if not info.enabled:
        return 0.0
    mine = torch.cat([p.detach().float().flatten() for p in module.parameters()])  # (n_params,)
    rank0 = mine.clone()
    dist.broadcast(rank0, src=0)
    diff = (mine - rank0).abs().max()
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return float(diff.item())


def gradient_averaging_check(ddp_model: torch.nn.Module, loss: Any, info: DistInfo) -> dict[str, float]:
    """Check on one batch that a DDP backward leaves every rank with the mean of the ranks' own gradients.

    ``loss()`` computes this rank's loss on its own batch through ``ddp_model`` (a
    ``DistributedDataParallel``). The local gradient is taken under ``no_sync`` (no communication),
    then the normal synchronised one. Returns, as maxima over parameters and ranks:
    ``"ranks_local_spread"``: how much the ranks' own gradients differ (> 0: they saw different data);
    ``"synced_minus_mean"``: |synced gradient - mean of the local ones| (~0: DDP averaged them);
    ``"synced_spread"``: how much the synced gradients differ between ranks (~0: all apply one update).
    Gradients are zeroed afterwards. Every rank must call it.
    """
    if not info.enabled:
        raise RuntimeError("gradient_averaging_check needs a multi-process run: start it with torchrun")
    params = [p for p in ddp_model.parameters() if p.requires_grad]

    def flat_grad() -> torch.Tensor:
        return torch.cat([p.grad.detach().float().flatten() for p in params])  # (n_params,)

    ddp_model.zero_grad(set_to_none=True)
    with ddp_model.no_sync():  # this rank's gradient only
        loss().backward()
    local = flat_grad()
    ddp_model.zero_grad(set_to_none=True)
    loss().backward()  # DDP all-reduces (averages) during this backward
    synced = flat_grad()
    ddp_model.zero_grad(set_to_none=True)

    def max_over_ranks(x: torch.Tensor) -> float:
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.MAX)
        return float(x.item())

    def spread(x: torch.Tensor) -> float:  # max |x - x on rank 0| over ranks
        rank0 = x.clone()
        dist.broadcast(rank0, src=0)
        return max_over_ranks((x - rank0).abs().max())

    mean_local = all_reduce_mean(local, info)
    return {
        "ranks_local_spread": spread(local),
        "synced_minus_mean": max_over_ranks((synced - mean_local).abs().max()),
        "synced_spread": spread(synced),
    }


def _self_check() -> int:
    """``torchrun --nproc_per_node 2 -m course_lib.distributed``: DDP on a tiny GPT, checked (CPU, gloo)."""
    from course_lib.gpt import GPT, get_config

    info = init_distributed("cpu")
    if not info.enabled:
        print(
            "start this with torchrun and at least 2 processes: "
            "python -m torch.distributed.run --standalone --nproc_per_node 2 -m course_lib.distributed"
        )
        return 2
    try:
        torch.manual_seed(0)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
        model = GPT(get_config("tiny", vocab_size=64, block_size=16, n_layer=1, n_head=2, d_model=32))
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        g = torch.Generator().manual_seed(100 + info.rank)  # each rank its own batch
        idx = torch.randint(0, 64, (4, 17), generator=g)  # (B, T + 1)
        report = gradient_averaging_check(ddp, lambda: ddp(idx[:, :-1], idx[:, 1:])[1], info)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        for _ in range(3):  # three ordinary DDP steps on the ranks' different batches
            optimizer.zero_grad(set_to_none=True)
            ddp(idx[:, :-1], idx[:, 1:])[1].backward()
            optimizer.step()
        report["weights_spread_after_3_steps"] = max_replica_difference(model, info)
        if info.is_main:
            print(f"{info.world_size} processes ({info.backend}), one batch of its own each")
            for key, value in report.items():
                print(f"{key:<30} {value:.3g}")
        return 0
    finally:
        destroy_distributed(info)


if __name__ == "__main__":
    raise SystemExit(_self_check())
