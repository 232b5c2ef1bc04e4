"""Several processes under `torchrun`: one process group, DDP-wrapped networks, rank 0 writes.

`torchrun --nproc-per-node N upscale train ...` starts N copies of the same command with RANK,
WORLD_SIZE and LOCAL_RANK set. Each copy trains on its own slice of every global batch (see
`train.data.images.IterationSampler`); DistributedDataParallel averages the gradients, so the networks stay
identical. The backend is NCCL on CUDA and gloo on the CPU. Only rank 0 validates and writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from train.recipes.config import ConfigError


@dataclass(frozen=True)
class Distributed:
    """Where this process stands: rank 0 of 1 when not distributed."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_environment() -> Distributed:
    """The process's place from torchrun's environment variables (rank 0 of 1 without them)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    return Distributed(
        rank=int(os.environ["RANK"]), world_size=world_size, local_rank=int(os.environ.get("LOCAL_RANK", "0"))
    )


def device_for(place: Distributed, requested: str) -> torch.device:
    """The device this process trains on: `auto` is CUDA when present; each rank its own GPU."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(requested)
    except (RuntimeError, ValueError):
        raise ConfigError(
            f"train.device: must be auto, cpu, cuda, cuda:N or mps (got {requested!r})"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"train.device: {requested} asked for, but torch {torch.__version__} sees no CUDA GPU",
                hint="pass --device cpu, or install a CUDA build of torch on a machine with a GPU",
            )
        if place.enabled:
            device = torch.device("cuda", place.local_rank)
        elif device.index is None:  # set_device needs an index
            device = torch.device("cuda", torch.cuda.current_device())
        if device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"train.device: {device} does not exist (this machine has "
                f"{torch.cuda.device_count()} CUDA device(s))"
            )
        torch.cuda.set_device(device)
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("train.device: mps asked for, but MPS is not available here")
    elif device.type not in ("cpu", "mps"):
        raise ConfigError(f"train.device: must be auto, cpu, cuda, cuda:N or mps (got {requested!r})")
    return device


def start(place: Distributed, device: torch.device) -> None:
    """Join the process group (NCCL for CUDA, gloo otherwise); nothing when not distributed."""
    if place.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=place.rank, world_size=place.world_size)


def stop(place: Distributed) -> None:
    if place.enabled and dist.is_initialized():
        dist.destroy_process_group()


def wrap(module: nn.Module, place: Distributed, device: torch.device) -> nn.Module:
    """`module` in DistributedDataParallel when distributed, else as it is."""
    if not place.enabled:
        return module
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids)


def unwrap(module: nn.Module) -> nn.Module:
    """The network inside a DDP wrapper (for saving, EMA, and calls that must not sync)."""
    return module.module if isinstance(module, DistributedDataParallel) else module


def any_rank(place: Distributed, flag: bool, device: torch.device) -> bool:
    """True on every rank when `flag` is true on any (so that all ranks stop at the same iteration)."""
    if not place.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def barrier(place: Distributed) -> None:
    if place.enabled:
        dist.barrier()
