"""Data-parallel training under torchrun: process group set-up, weight broadcast, gradient averaging.

Gradients are averaged by hand after each backward (as stylegan2-ada does) instead of wrapping the networks
in DistributedDataParallel. In StyleGAN2, the first user, the GAN alternates which network learns, the
regularisers take gradients of gradients, and the discriminator is used by the generator's loss without
learning from it: three things DDP's bucketed hooks handle badly. The result is the same synchronous data
parallelism, and any trainer can use it.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistContext:
    """Who this process is under torchrun; the default is the single process of a plain run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def local_batch(self, batch: int, name: str = "optim.batch") -> int:
        """This rank's share of a global batch, which must split evenly over the ranks."""
        if batch % self.world_size:
            raise ValueError(f"{name}={batch} must be divisible by the world size {self.world_size}")
        return batch // self.world_size


def init_distributed(device_type: str) -> DistContext:
    """Join torchrun's process group when WORLD_SIZE > 1 (NCCL on CUDA, gloo on CPU); else a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=dt.timedelta(minutes=30))
    return DistContext(rank, world_size, local_rank)


def broadcast_module(module: nn.Module, ctx: DistContext) -> None:
    """Make every rank start from rank 0's weights and buffers."""
    if not ctx.enabled:
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def average_gradients(module: nn.Module, ctx: DistContext) -> None:
    """All-reduce the gradients of `module` (one flat buffer) and divide by the world size."""
    if not ctx.enabled:
        return
    params = [p for p in module.parameters() if p.requires_grad]
    for param in params:  # a parameter unused on one rank must still take part, or the buffers misalign
        if param.grad is None:
            param.grad = torch.zeros_like(param)
    flat = torch.cat([p.grad.flatten() for p in params])
    dist.all_reduce(flat)
    flat /= ctx.world_size
    offset = 0
    for param in params:
        count = param.grad.numel()
        param.grad.copy_(flat[offset:offset + count].view_as(param.grad))
        offset += count


def average_tensor(value: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Mean of a tensor across ranks (a copy; the input is untouched)."""
    value = value.detach().clone()
    if ctx.enabled:
        dist.all_reduce(value)
        value /= ctx.world_size
    return value


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (a no-op in a single process), e.g. so nobody reads a checkpoint being written."""
    if ctx.enabled:
        dist.barrier()


def setup_runtime(device_name: str, threads: int | None = None) -> tuple[torch.device, DistContext]:
    """Every stage's first step: pick the device, join the torchrun group (if any), one GPU per local rank,
    and the CPU thread count (`runtime.threads`; None or 0 keeps torch's default)."""
    from training.common.device import select_device

    device = select_device(device_name)
    ctx = init_distributed(device.type)
    if device.type == "cuda" and ctx.enabled:
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    if threads:
        torch.set_num_threads(threads)
    return device, ctx
