"""Device selection shared by every trainer and by inference (one rule, one error message)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def select_device(name: str | torch.device) -> torch.device:
    """'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N', with a clear error for anything unusable."""
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {name!r} (cpu, cuda, cuda:N or auto)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available on this machine")
    return device


@contextlib.contextmanager
def kept_torch_threads() -> Iterator[None]:
    """A stage's `runtime.threads` is its own: the stages after it in the same process keep their setting."""
    previous = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(previous)
