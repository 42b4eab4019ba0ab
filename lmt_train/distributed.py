"""Multi-process training through torchrun: process group, devices, sharded sampling, collectives.

`torchrun --nproc-per-node N -m lmt_train train ...` sets RANK / WORLD_SIZE / LOCAL_RANK; `setup` then
joins the process group (NCCL on GPUs, gloo on CPUs). Without those variables everything here is a
no-op for a single process, so the trainer runs one code path.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DistributedSampler


@dataclass(frozen=True)
class DistributedContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool = False   # True when setup() created the process group (and teardown ends it)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str = "auto") -> DistributedContext:
    """Join the torchrun process group when there is one; pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    target = resolve_device(device, local_rank)
    if target.type == "cuda":
        torch.cuda.set_device(target)
    owns = False
    if world_size > 1 and not (dist.is_available() and dist.is_initialized()):
        if not dist.is_available():
            raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
        dist.init_process_group("nccl" if target.type == "cuda" else "gloo", rank=rank, world_size=world_size)
        owns = True
    return DistributedContext(rank, world_size, local_rank, target, owns)


def teardown(ctx: DistributedContext) -> None:
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """"auto" is this process's GPU when there is one, else the CPU; "cuda" means this process's GPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        device = f"cuda:{local_rank}"
    target = torch.device(device)
    if target.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available")
    return target


def wrap(module: nn.Module, ctx: DistributedContext) -> nn.Module:
    """DistributedDataParallel around `module` in a multi-process run; the module itself otherwise."""
    if not ctx.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, output_device=ids[0] if ids else None)


def any_rank(flag: bool, ctx: DistributedContext) -> bool:
    """True on every rank when any rank passes True (so all ranks stop at the same iteration)."""
    if not ctx.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=_collective_device(ctx))
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def mean_over_ranks(values: dict[str, float], ctx: DistributedContext) -> dict[str, float]:
    """The mean of each value over all ranks (for logging)."""
    if not ctx.enabled or not values:
        return values
    names = sorted(values)
    stacked = torch.tensor([values[n] for n in names], dtype=torch.float64, device=_collective_device(ctx))
    dist.all_reduce(stacked)
    return {n: float(v) / ctx.world_size for n, v in zip(names, stacked.tolist())}


def gather_objects(obj: Any, ctx: DistributedContext) -> list[Any]:
    """[obj of rank 0, obj of rank 1, ...] on every rank."""
    if not ctx.enabled:
        return [obj]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_buffers(module: nn.Module, ctx: DistributedContext) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank, so saved models agree."""
    if not ctx.enabled:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=0)


def barrier(ctx: DistributedContext) -> None:
    if ctx.enabled:
        dist.barrier()


def _collective_device(ctx: DistributedContext) -> torch.device:
    return ctx.device if dist.get_backend() == "nccl" else torch.device("cpu")


class ResumableSampler(DistributedSampler):
    """DistributedSampler (a shuffle per epoch from seed + epoch, sharded by rank) that can start an epoch
    part-way through, so a resumed run reads exactly the samples an uninterrupted one would."""

    def __init__(self, dataset, ctx: DistributedContext, seed: int):
        super().__init__(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed,
                         drop_last=False)
        self.skip = 0

    def set_position(self, epoch: int, skip: int) -> None:
        """Start `epoch` after its first `skip` samples (of this rank)."""
        self.set_epoch(epoch)
        self.skip = int(skip)

    def __iter__(self):
        indices = list(super().__iter__())
        return iter(indices[self.skip:])

    def __len__(self) -> int:
        return max(self.num_samples - self.skip, 0)
