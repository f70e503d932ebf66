"""LPIPS (Zhang et al. 2018, VGG variant) from weights paths, for the optional perceptual term of train-fusion.

No installable package here ships VGG16 weights, and `lpips` itself needs torchvision, so the metric is rebuilt:
torchvision's `vgg16().features` (state-dict names `features.N.*`, N up to 28), tapped after relu1_2, relu2_2,
relu3_3, relu4_3 and relu5_3; the input scaled by lpips' ScalingLayer (shift -0.030/-0.088/-0.188, scale
0.458/0.448/0.450 on [-1, 1] images); each tap unit-normalised over channels per pixel; the squared difference
weighted per channel by lpips' learned 1x1 "lin" layers (`lin<k>.model.1.weight` in lpips' `vgg.pth`),
averaged over space and summed over taps. Without the linear weights every channel weighs 1 (lpips'
`lpips=False` baseline: the plain channel sum), which is a perceptual distance but not calibrated LPIPS.

`training/unsup3d` has a VGG16 too, but only up to relu3_3 (what Unsup3d's loss uses); LPIPS needs two more
blocks, and train-fusion's code paths do not include the Unsup3d package.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from training.common.checkpoint import CheckpointError, load_checkpoint

__all__ = ["LPIPS", "TAP_CHANNELS", "VGG16Taps", "load_lpips"]

# torchvision vgg16 `features`: conv widths with "M" for max-pooling; taps after the ReLU ending each block.
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
TAP_AFTER = (3, 8, 15, 22, 29)  # indices of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 in `features`
TAP_CHANNELS = (64, 128, 256, 512, 512)
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


class VGG16Taps(nn.Module):
    """torchvision's vgg16 `features[:30]` (same state-dict names), returning the five LPIPS taps."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for item in _VGG16:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, int(item), 3, padding=1), nn.ReLU(inplace=False)]
                channels = int(item)
        self.features = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> list[Tensor]:
        taps = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in TAP_AFTER:
                taps.append(x)
        return taps


class LPIPS(nn.Module):
    """Per-sample LPIPS distance (B,) of images in [-1, 1]; frozen and always in eval mode."""

    def __init__(self, backbone: VGG16Taps, linear: list[Tensor] | None = None):
        super().__init__()
        self.backbone = backbone
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))
        weights = linear if linear is not None else [torch.ones(1, c, 1, 1) for c in TAP_CHANNELS]
        for index, weight in enumerate(weights):
            self.register_buffer(f"lin{index}", weight.detach().float().reshape(1, -1, 1, 1).clone())
        self.calibrated = linear is not None
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> LPIPS:
        super().train(False)
        return self

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        taps = self.backbone((torch.cat([a, b]) - self.shift) / self.scale)
        total = a.new_zeros(a.shape[0])
        for index, tap in enumerate(taps):
            tap = tap / (tap.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            fa, fb = tap.chunk(2)
            weighted = ((fa - fb) ** 2 * getattr(self, f"lin{index}")).sum(1)
            total = total + weighted.mean((1, 2))
        return total


def _vgg_state(path: Path) -> dict[str, Tensor]:
    checkpoint = load_checkpoint(path)
    state = checkpoint.get("state_dict", checkpoint)
    wanted = VGG16Taps().state_dict()
    picked = {key: value for key, value in state.items() if key in wanted}
    missing = sorted(set(wanted) - set(picked), key=lambda k: int(k.split(".")[1]))
    if missing:
        raise CheckpointError(f"{path} is not a torchvision VGG16 state dict: it lacks {missing[:4]}")
    misshapen = [k for k in wanted if picked[k].shape != wanted[k].shape]
    if misshapen:
        raise CheckpointError(f"{path}: {misshapen[:3]} have the wrong shape for VGG16")
    return picked


def _linear_weights(path: Path) -> list[Tensor]:
    state = load_checkpoint(path)
    weights = []
    for index, channels in enumerate(TAP_CHANNELS):
        key = f"lin{index}.model.1.weight"
        if key not in state:
            raise CheckpointError(f"{path} is not lpips' vgg.pth: it lacks {key!r} (has {sorted(state)[:5]})")
        if tuple(state[key].shape) != (1, channels, 1, 1):
            raise CheckpointError(f"{path}: {key} has shape {tuple(state[key].shape)}, expected (1, {channels}, 1, 1)")
        weights.append(state[key])
    return weights


def load_lpips(vgg16: str | Path, linear: str | Path | None = None,
               device: str | torch.device = "cpu") -> LPIPS:
    """LPIPS from a torchvision VGG16 state dict and, optionally, lpips' linear weights (`vgg.pth`)."""
    backbone = VGG16Taps()
    backbone.load_state_dict(_vgg_state(Path(vgg16)))
    return LPIPS(backbone, _linear_weights(Path(linear)) if linear is not None else None).to(device)
