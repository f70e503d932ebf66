"""`AttributeScorer`: a trained attribute classifier as a plain callable on images (fit-boundaries uses it).

A classifier checkpoint carries everything needed to rebuild the network without the training config:
`{"model": state_dict, "arch": build_classifier kwargs, "attributes": [...], "resolution": int,
"temperature": float, "sdgan": {counters, config, dataset_version, ...}, "optim": ... (resume only)}`.
It loads weights-only (no pickled code runs). Images of any size are area-resized to the model's
resolution, so a 256 px generator can be scored by a 64 px classifier.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from training.common.checkpoint import CheckpointError, load_checkpoint, load_state_strict, save_checkpoint
from training.classifier.model import build_classifier

__all__ = ["REQUIRED_KEYS", "AttributeScorer", "resize_images"]

REQUIRED_KEYS = ("model", "arch", "attributes", "resolution")


def resize_images(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """NCHW float -> resolution x resolution: area when shrinking (no aliasing), bilinear when enlarging."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected NCHW RGB images, got shape {tuple(images.shape)}")
    height, width = images.shape[-2:]
    if (height, width) == (resolution, resolution):
        return images
    if height >= resolution and width >= resolution:
        return F.interpolate(images, size=(resolution, resolution), mode="area")
    return F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False)


class AttributeScorer:
    """Per-attribute logits / probabilities of a classifier; evaluation mode, no gradients, batched."""

    def __init__(self, model: nn.Module, attributes: Sequence[str], resolution: int, temperature: float = 1.0,
                 *, device: str | torch.device = "cpu", batch_size: int = 64) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self._device = torch.device(device)
        self.model = model.to(self._device).eval()
        self._attributes = tuple(attributes)
        self._resolution = int(resolution)
        self._temperature = float(temperature)
        self.batch_size = batch_size
        self.arch: dict[str, Any] | None = None
        self.meta: dict[str, Any] = {}

    @property
    def attributes(self) -> tuple[str, ...]:
        return self._attributes

    @property
    def resolution(self) -> int:
        return self._resolution

    @property
    def temperature(self) -> float:
        return self._temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        """Calibration sets it after training; it only rescales probabilities, never the logits."""
        if value <= 0:
            raise ValueError(f"temperature must be > 0, got {value}")
        self._temperature = float(value)

    @property
    def device(self) -> torch.device:
        return self._device

    # ------------------------------------------------------------------ scoring
    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Float NCHW images in [-1, 1], any size -> [N, A] raw logits (float32, CPU)."""
        if images.ndim != 4:
            raise ValueError(f"expected NCHW images, got shape {tuple(images.shape)}")
        out = []
        for start in range(0, images.shape[0], self.batch_size):
            chunk = images[start:start + self.batch_size].to(self._device, torch.float32)
            out.append(self.model(resize_images(chunk, self._resolution)).float().cpu())
        if not out:
            return torch.zeros(0, len(self._attributes))
        return torch.cat(out)

    def probabilities(self, images: torch.Tensor, calibrated: bool = True) -> torch.Tensor:
        """sigmoid(logits / temperature) (temperature 1 when `calibrated` is False): [N, A] on CPU."""
        logits = self.logits(images)
        return torch.sigmoid(logits / self._temperature if calibrated else logits)

    __call__ = probabilities

    # ------------------------------------------------------------------ files
    def to_checkpoint(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """The checkpoint dict (weights on CPU); `extra` (e.g. "sdgan", "optim") is merged in."""
        if self.arch is None:
            raise ValueError("this scorer does not know its model's build_classifier kwargs (set .arch)")
        return {"model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()}, "arch": dict(self.arch),
                "attributes": list(self._attributes), "resolution": self._resolution,
                "temperature": self._temperature, **(extra or {})}

    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Atomic write of `to_checkpoint(extra)`."""
        return save_checkpoint(path, self.to_checkpoint(extra))

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any], device: str | torch.device = "cpu",
                        what: str = "checkpoint") -> AttributeScorer:
        """Rebuild from a checkpoint dict; CheckpointError (naming the keys found) for any other kind of dict."""
        missing = [key for key in REQUIRED_KEYS if key not in checkpoint]
        if missing:
            raise CheckpointError(f"{what} is not an attribute classifier checkpoint: it lacks {missing}; "
                                  f"it has {sorted(checkpoint)}")
        try:
            model = build_classifier(**checkpoint["arch"])
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{what}: cannot build the classifier from arch {checkpoint['arch']}: {exc}") from exc
        load_state_strict(model, checkpoint["model"], f"{what}['model']")
        scorer = cls(model, checkpoint["attributes"], int(checkpoint["resolution"]),
                     float(checkpoint.get("temperature", 1.0)), device=device)
        scorer.arch = dict(checkpoint["arch"])
        scorer.meta = dict(checkpoint.get("sdgan") or {})
        return scorer

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> AttributeScorer:
        """Read a classifier checkpoint weights-only (missing file: FileNotFoundError; else CheckpointError)."""
        return cls.from_checkpoint(load_checkpoint(path, map_location="cpu"), device=device, what=str(path))
