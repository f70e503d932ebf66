"""A small residual CNN with one logit per attribute.

Our own definition (no torchvision): the attributes are multi-label (a face can wear a mask and glasses at
once), so the head is one independent logit per attribute, trained with BCE. GroupNorm instead of
BatchNorm: statistics do not depend on the batch, so evaluation equals training behaviour, tiny per-rank
batches under data parallelism behave, and the PyTorch 2.13 CPU batch-norm backward bug at batch 1 cannot bite.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

__all__ = ["ATTRIBUTES", "LABEL_NAMES", "AttributeClassifier", "build_classifier", "default_arch"]

# Order of the logits. Shard `.cls` labels: 0 none, i + 1 = ATTRIBUTES[i].
ATTRIBUTES: tuple[str, ...] = ("face_mask", "sunglasses", "frame_glasses")
LABEL_NAMES: tuple[str, ...] = ("none",) + ATTRIBUTES


def _groups(channels: int) -> int:
    """Largest group count <= 8 that divides `channels` (GroupNorm needs an exact division)."""
    for groups in (8, 4, 2, 1):
        if channels % groups == 0:
            return groups
    return 1


class ResBlock(nn.Module):
    """Pre-activation residual block (GN-SiLU-conv twice), optionally halving the resolution."""

    def __init__(self, in_ch: int, out_ch: int, downsample: bool) -> None:
        super().__init__()
        stride = 2 if downsample else 1
        self.norm1 = nn.GroupNorm(_groups(in_ch), in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(_groups(out_ch), out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.act = nn.SiLU()
        self.skip: nn.Module = (nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)
                                if downsample or in_ch != out_ch else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        h = self.conv2(self.act(self.norm2(h)))
        return self.skip(x) + h


class AttributeClassifier(nn.Module):
    """stem conv -> stages of residual blocks halving down to 4x4 -> GN-SiLU -> global avg pool -> linear."""

    def __init__(self, resolution: int = 64, num_attributes: int = len(ATTRIBUTES), width: int = 32,
                 max_width: int = 256, depth: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        if resolution < 32 or resolution > 256 or resolution & (resolution - 1):
            raise ValueError(f"resolution must be a power of two in 32..256, got {resolution}")
        if depth < 1 or width < 1:
            raise ValueError("depth and width must be >= 1")
        self.resolution = resolution
        self.num_attributes = num_attributes
        self.stem = nn.Conv2d(3, width, 3, padding=1, bias=False)
        blocks: list[nn.Module] = []
        channels = width
        for level in range(int(math.log2(resolution)) - 2):  # resolution -> 4
            out = min(width * 2 ** (level + 1), max_width)
            blocks.append(ResBlock(channels, out, downsample=True))
            blocks.extend(ResBlock(out, out, downsample=False) for _ in range(depth - 1))
            channels = out
        self.blocks = nn.Sequential(*blocks)
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.act = nn.SiLU()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(channels, num_attributes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """[N, 3, R, R] in [-1, 1] -> [N, A] logits."""
        h = self.blocks(self.stem(images))
        h = self.act(self.norm(h)).mean(dim=(2, 3))
        return self.head(self.dropout(h))


def default_arch(resolution: int = 64) -> dict[str, Any]:
    """The build_classifier kwargs a checkpoint records when nothing else was chosen."""
    return {"resolution": resolution, "num_attributes": len(ATTRIBUTES), "width": 32, "max_width": 256,
            "depth": 1, "dropout": 0.0}


def build_classifier(**arch: Any) -> AttributeClassifier:
    """Build from the kwargs a checkpoint's "arch" records (so loading never needs the training config)."""
    return AttributeClassifier(**arch)
