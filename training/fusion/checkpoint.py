"""Fusion checkpoints: the official `checkpoint_latest.pt` layout, read and written, weights-only.

The official file is `{"model": DataParallel(model).state_dict()}` (every key prefixed `module.`) and carries
no sizes; ours is the same plus `"arch"` (FusionArch.to_json()) and the caller's extra entries, so the
official `test.py` (`DataParallel(model).load_state_dict(ckpt["model"])`) loads ours unchanged. A file
without `arch` gets its FusionArch inferred from the tensor shapes, so official files of any size load.
Everything is read with `torch.load(weights_only=True)` (training.common.checkpoint.load_checkpoint); every
problem is one CheckpointError naming the file and, for a misfit, the missing, unexpected and misshapen keys.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from training.common.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from training.fusion.network import FusionArch, SemanticFusionNetwork

__all__ = ["ARCH_KEY", "MODEL_KEY", "fusion_state_dict", "infer_arch", "load_fusion_checkpoint",
           "load_fusion_state", "save_fusion_checkpoint"]

MODEL_KEY = "model"
ARCH_KEY = "arch"
PREFIX = "module."
# Top-level keys that identify other projects' checkpoints, for a clearer refusal.
_OTHER_KINDS = {"g_ema": "a StyleGAN2 checkpoint", "netD": "an Unsup3d checkpoint", "netA": "an Unsup3d checkpoint",
                "G_ema": "a StyleGAN2-ADA snapshot"}
# The keys FusionArch is read from (official names, without `module.`).
_SHAPE_KEYS = ("arcfacenet.conv1.weight", "arcfacenet.layer2.0.conv2.weight", "arcfacenet.layer3.0.conv2.weight",
               "arcfacenet.layer4.0.conv2.weight", "encoder.model.1.weight", "encoder.model.14.weight",
               "fusion.Spade.mlp_shared.0.weight", "regre.tree_connect_1.0.weight", "regre.tree_connect_2.0.weight")


def fusion_state_dict(model: SemanticFusionNetwork) -> dict[str, torch.Tensor]:
    """The official DataParallel layout: `module.` + key, locally connected weights as (1, out, in, positions, 1)."""
    return {PREFIX + key: value.detach().contiguous() for key, value in model.state_dict().items()}


def save_fusion_checkpoint(model: SemanticFusionNetwork, path: str | Path, *,
                           extra: Mapping[str, Any] | None = None) -> Path:
    """Write {"model": official-layout state dict, "arch": ..., **extra} atomically."""
    extra = dict(extra or {})
    clash = sorted({MODEL_KEY, ARCH_KEY} & set(extra))
    if clash:
        raise ValueError(f"extra may not use the reserved keys {clash}")
    return save_checkpoint(path, {MODEL_KEY: fusion_state_dict(model), ARCH_KEY: model.arch.to_json(), **extra})


def _strip_prefix(state: Mapping[str, Any]) -> dict[str, Any]:
    return {key.removeprefix(PREFIX): value for key, value in state.items()}


def infer_arch(state: Mapping[str, torch.Tensor], what: str = "state dict") -> FusionArch:
    """FusionArch from official-layout shapes (no `module.` prefix); CheckpointError if it cannot be read."""
    missing = [key for key in _SHAPE_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"{what} is not a fusion network state dict: missing {missing[:4]}"
                              f"{' ...' if len(missing) > 4 else ''} ({len(missing)} of the keys its sizes are read from)")
    shape = {key: tuple(state[key].shape) for key in _SHAPE_KEYS}
    lc1, lc2 = shape["regre.tree_connect_1.0.weight"], shape["regre.tree_connect_2.0.weight"]
    if len(lc1) != 5 or len(lc2) != 5 or len(shape["encoder.model.1.weight"]) != 4:
        raise CheckpointError(f"{what}: unexpected tensor ranks for {_SHAPE_KEYS[-2:]} / encoder.model.1.weight")
    side = math.isqrt(lc1[3])
    if side * side != lc1[3]:
        raise CheckpointError(f"{what}: regre.tree_connect_1.0.weight has {lc1[3]} positions, not a square map")
    slots = sum(1 for key in state if key.startswith("fusion.fc_mu") and key.endswith(".weight"))
    try:
        return FusionArch(image_size=16 * side,
                          canonical_channels=shape["encoder.model.1.weight"][1],
                          widths=(shape["arcfacenet.conv1.weight"][0], shape["arcfacenet.layer2.0.conv2.weight"][0],
                                  shape["arcfacenet.layer3.0.conv2.weight"][0],
                                  shape["arcfacenet.layer4.0.conv2.weight"][0]),
                          encoder_width=shape["encoder.model.1.weight"][0],
                          style_length=shape["encoder.model.14.weight"][0],
                          spade_hidden=shape["fusion.Spade.mlp_shared.0.weight"][0],
                          w_dim=lc1[1], num_ws=lc2[1], style_slots=slots)
    except ValueError as exc:
        raise CheckpointError(f"{what}: its shapes give no valid FusionArch: {exc}") from exc


def _check_fits(model: SemanticFusionNetwork, state: Mapping[str, Any], what: str) -> None:
    """One CheckpointError listing (a few of, with counts) the missing, unexpected and misshapen keys."""
    own = model.state_dict()
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    misshapen = [f"{key}: file {tuple(getattr(state[key], 'shape', ()))} vs model {tuple(own[key].shape)}"
                 for key in own if key in state and (not isinstance(state[key], torch.Tensor)
                                                     or state[key].shape != own[key].shape)]
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("misshapen", misshapen)):
        if items:
            parts.append(f"{len(items)} {label} {items[:5]}{' ...' if len(items) > 5 else ''}")
    if parts:
        raise CheckpointError(f"{what} does not fit the fusion network {model.arch}: " + "; ".join(parts))


def load_fusion_state(state: Mapping[str, Any], *, arch: FusionArch | None = None,
                      what: str = "state dict") -> SemanticFusionNetwork:
    """A network holding `state` (official layout, with or without `module.`), strictly; arch inferred if None."""
    state = _strip_prefix(state)
    arch = arch or infer_arch(state, what)
    with torch.device("meta"):  # no point initialising 128M parameters that are overwritten next
        model = SemanticFusionNetwork(arch)
    _check_fits(model, state, what)
    model = model.to_empty(device="cpu")
    model.load_state_dict(state, strict=True)
    return model


def _describe_other(checkpoint: Mapping[str, Any]) -> str | None:
    for key, kind in _OTHER_KINDS.items():
        if key in checkpoint:
            return kind
    return None


def load_fusion_checkpoint(path: str | Path, *, device: str | torch.device = "cpu") -> SemanticFusionNetwork:
    """The network of an official `checkpoint_latest.pt`, one of ours, or a bare state dict (strict, weights-only)."""
    path = Path(path)
    checkpoint = load_checkpoint(path, map_location="cpu")
    other = _describe_other(checkpoint)
    if other is not None:
        raise CheckpointError(f"{path} is {other} (keys {sorted(checkpoint)[:6]}), not a fusion network checkpoint")
    if MODEL_KEY in checkpoint:
        state = checkpoint[MODEL_KEY]
        if not isinstance(state, Mapping):
            raise CheckpointError(f"{path}: '{MODEL_KEY}' holds a {type(state).__name__}, expected a state dict")
    elif checkpoint and all(isinstance(value, torch.Tensor) for value in checkpoint.values()):
        state = checkpoint  # a bare state dict
    else:
        raise CheckpointError(f"{path} is not a fusion network checkpoint: no '{MODEL_KEY}' entry and not a state "
                              f"dict (top-level keys {sorted(map(str, checkpoint))[:6]})")
    arch = None
    if ARCH_KEY in checkpoint:
        try:
            arch = FusionArch.from_json(checkpoint[ARCH_KEY])
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: unreadable '{ARCH_KEY}' entry: {exc}") from exc
    model = load_fusion_state(state, arch=arch, what=str(path))
    return model.to(device)
