"""The distributed helpers in a single process: every collective is a no-op, so trainers need no branches.

(Two real gloo processes are exercised by tests/training/stylegan2/test_trainer.py.)"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from training.common.distributed import (
    DistContext,
    average_gradients,
    average_tensor,
    barrier,
    broadcast_module,
    init_distributed,
)


def test_without_torchrun_the_context_is_one_main_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = init_distributed("cpu")
    assert ctx == DistContext() and ctx.is_main and not ctx.enabled
    assert DistContext(rank=1, world_size=2).enabled and not DistContext(rank=1, world_size=2).is_main


def test_single_process_collectives_leave_values_alone() -> None:
    ctx = DistContext()
    model = nn.Linear(2, 1)
    model(torch.ones(3, 2)).sum().backward()
    before = [p.grad.clone() for p in model.parameters()]
    broadcast_module(model, ctx)
    average_gradients(model, ctx)
    barrier(ctx)
    assert all(torch.equal(a, p.grad) for a, p in zip(before, model.parameters()))
    value = torch.tensor([1.0, 2.0])
    averaged = average_tensor(value, ctx)
    assert torch.equal(averaged, value) and averaged is not value
