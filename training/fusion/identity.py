"""An ArcFace-compatible identity network, loaded from a weights path, for the identity term of train-fusion.

dlib's descriptor (what align and evaluation use) gives no gradients, so the identity loss needs a torch face
recogniser. This is the IResNet of insightface's `recognition/arcface_torch` (written here from its documented
structure, so its state dicts load strictly with their own names): a 3x3 stem (conv1, bn1, prelu), four stages
of pre-activation blocks `IBasicBlock` (bn1, conv1 3x3, bn2, prelu, conv2 3x3 with the stage's stride 2, bn3,
plus a 1x1-conv + BN `downsample` on the first block), bn2, flatten, fc to the embedding, and a BatchNorm1d
`features`. iresnet18 / 34 / 50 / 100 differ only in blocks per stage (2-2-2-2, 3-4-6-3, 3-4-14-3, 3-13-30-3);
every shape, the block counts included, is read from the state dict, so narrower networks of the same structure
(the tests' tiny ones) load too. Input: RGB in [-1, 1] at 112 x 112 (arcface_torch normalises (x/255 - 0.5)/0.5,
which is our image convention); output: the embedding (512-d for the released models).

Generated faces are FFHQ-aligned, looser than ArcFace's crops, so `ArcFaceIdentity` first crops the face box
pSp's ID loss uses ([35:223, 32:220] of a 256 px face, scaled to the image size) and resizes it to 112.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.common.checkpoint import CheckpointError, load_checkpoint, load_state_strict

__all__ = ["KNOWN_DEPTHS", "ArcFaceIdentity", "IResNet", "IResNetShape", "load_arcface", "shape_from_state"]

INPUT_SIZE = 112
FEATURE_GRID = 7  # 112 / 2**4: the fc sees a 7 x 7 map
KNOWN_DEPTHS = {(2, 2, 2, 2): "iresnet18", (3, 4, 6, 3): "iresnet34", (3, 4, 14, 3): "iresnet50",
                (3, 13, 30, 3): "iresnet100", (6, 26, 60, 6): "iresnet200"}
# pSp's IDLoss crop of a 256 px FFHQ-aligned face: rows 35..223, columns 32..220 (as fractions of the size).
FACE_BOX = (35 / 256, 223 / 256, 32 / 256, 220 / 256)
_BLOCK_KEY = re.compile(r"^layer([1-4])\.(\d+)\.")


class IBasicBlock(nn.Module):
    """Pre-activation residual block: BN, 3x3 conv, BN, PReLU, 3x3 conv (strided), BN, plus the shortcut."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels, eps=1e-5)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels, eps=1e-5)
        self.prelu = nn.PReLU(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels, eps=1e-5)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (self.downsample(x) if self.downsample is not None else x)


class IResNetShape:
    """Widths and depths of an IResNet: the stem width, four (channels, blocks) stages, the embedding size."""

    def __init__(self, stem: int, stages: tuple[tuple[int, int], ...], features: int):
        self.stem, self.stages, self.features = stem, stages, features

    @property
    def name(self) -> str:
        """iresnet18/34/50/100/200 for the released widths, else a description."""
        depths = tuple(blocks for _, blocks in self.stages)
        widths = tuple(channels for channels, _ in self.stages)
        if self.stem == 64 and widths == (64, 128, 256, 512) and depths in KNOWN_DEPTHS:
            return KNOWN_DEPTHS[depths]
        return f"iresnet(stem {self.stem}, stages {list(self.stages)}, {self.features}-d)"


class IResNet(nn.Module):
    """arcface_torch's IResNet with arbitrary widths (state-dict names as the original)."""

    def __init__(self, shape: IResNetShape, dropout: float = 0.0):
        super().__init__()
        self.shape = shape
        self.conv1 = nn.Conv2d(3, shape.stem, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(shape.stem, eps=1e-5)
        self.prelu = nn.PReLU(shape.stem)
        channels_in = shape.stem
        for index, (channels, blocks) in enumerate(shape.stages, start=1):
            downsample = nn.Sequential(nn.Conv2d(channels_in, channels, 1, 2, bias=False),
                                       nn.BatchNorm2d(channels, eps=1e-5))
            layers = [IBasicBlock(channels_in, channels, 2, downsample)]
            layers += [IBasicBlock(channels, channels) for _ in range(blocks - 1)]
            setattr(self, f"layer{index}", nn.Sequential(*layers))
            channels_in = channels
        self.bn2 = nn.BatchNorm2d(channels_in, eps=1e-5)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(channels_in * FEATURE_GRID * FEATURE_GRID, shape.features)
        self.features = nn.BatchNorm1d(shape.features, eps=1e-5)

    def forward(self, x: Tensor) -> Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))


def shape_from_state(state: dict[str, Tensor]) -> IResNetShape:
    """Read the stem width, the four stages (channels, blocks) and the embedding size off the weights."""
    try:
        stem = int(state["conv1.weight"].shape[0])
        blocks = [0, 0, 0, 0]
        for key in state:
            if match := _BLOCK_KEY.match(key):
                stage, block = int(match[1]) - 1, int(match[2])
                blocks[stage] = max(blocks[stage], block + 1)
        if not all(blocks):
            raise KeyError("layer1..layer4")
        stages = tuple((int(state[f"layer{i + 1}.0.conv1.weight"].shape[0]), blocks[i]) for i in range(4))
        features = int(state["fc.weight"].shape[0])
        fc_in = int(state["fc.weight"].shape[1])
    except (KeyError, AttributeError, IndexError) as exc:
        raise CheckpointError(f"not an arcface_torch IResNet state dict (no {exc}); keys start with "
                              f"{sorted(state)[:6]}") from None
    if fc_in != stages[-1][0] * FEATURE_GRID**2:
        raise CheckpointError(f"fc takes {fc_in} inputs, not {stages[-1][0]} x 7 x 7: not a 112 px IResNet")
    return IResNetShape(stem, stages, features)


def _state_dict_of(checkpoint: dict[str, object]) -> dict[str, Tensor]:
    """A bare state dict, or one under "state_dict" / "model" (a DataParallel `module.` prefix is dropped)."""
    state = checkpoint
    for key in ("state_dict", "model"):
        if "conv1.weight" not in state and isinstance(state.get(key), dict):
            state = state[key]  # type: ignore[assignment]
    if any(str(k).startswith("module.") for k in state):
        state = {str(k).removeprefix("module."): v for k, v in state.items()}
    return {str(k): v for k, v in state.items() if isinstance(v, Tensor)}


class ArcFaceIdentity(nn.Module):
    """Unit identity embeddings of FFHQ-aligned faces in [-1, 1] at any size (frozen, eval mode)."""

    def __init__(self, backbone: IResNet, face_box: tuple[float, float, float, float] = FACE_BOX):
        super().__init__()
        self.backbone = backbone.eval().requires_grad_(False)
        self.face_box = face_box

    def train(self, mode: bool = True) -> ArcFaceIdentity:
        """Always eval: the loss must not move BatchNorm statistics."""
        super().train(False)
        return self

    def crop(self, images: Tensor) -> Tensor:
        """The face box of each image, resized to 112 x 112 (area when shrinking, bilinear when growing)."""
        size = images.shape[-1]
        top, bottom, left, right = (round(f * size) for f in self.face_box)
        face = images[..., top:bottom, left:right]
        if face.shape[-1] >= INPUT_SIZE and face.shape[-2] >= INPUT_SIZE:
            return F.adaptive_avg_pool2d(face, INPUT_SIZE)
        return F.interpolate(face, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)

    def forward(self, images: Tensor) -> Tensor:
        return F.normalize(self.backbone(self.crop(images).contiguous()), dim=1)


def load_arcface(path: str | Path, device: str | torch.device = "cpu") -> ArcFaceIdentity:
    """An arcface_torch IResNet state dict (weights only, strict) as a frozen `ArcFaceIdentity`."""
    checkpoint = load_checkpoint(path, map_location="cpu")
    state = _state_dict_of(checkpoint)
    shape = shape_from_state(state)
    backbone = IResNet(shape)
    load_state_strict(backbone, state, f"{path} ({shape.name})")
    return ArcFaceIdentity(backbone).to(device)
