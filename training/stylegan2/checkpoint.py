"""Checkpoints in the rosinality/stylegan2-pytorch layout, read safely and written atomically.

Layout: {"g", "d", "g_ema", "g_optim", "d_optim", "args" (argparse.Namespace), "ada_aug_p"}: what its
train.py saves and what SD-GAN and the rest of the ecosystem load (`ckpt["g_ema"]`). Our trainer adds one
key, "sdgan", with everything an exact resume needs (kimg, EMA and augmentation state, RNG states); other
loaders ignore it. Loading always uses `weights_only=True`, with `argparse.Namespace` as the only extra
allowed global. The generic I/O (safe load, atomic save, strict state loading) is `training.common.checkpoint`;
this module adds what is StyleGAN2's: the allowlist, and networks rebuilt from a checkpoint's args or shapes.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import torch

from training.common.checkpoint import CheckpointError, load_state_strict, save_checkpoint
from training.common.checkpoint import load_checkpoint as load_any_checkpoint
from training.stylegan2.networks import Discriminator, Generator, channel_table

__all__ = ["CheckpointError", "discriminator_from_checkpoint", "generator_from_checkpoint",
           "infer_discriminator_kwargs", "infer_generator_kwargs", "load_checkpoint", "load_state_strict",
           "require_finite", "save_checkpoint"]

MODEL_KEYS = ("g", "d", "g_ema")
ALLOWED_GLOBALS = (argparse.Namespace,)  # rosinality's train.py stores its options as `args`


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint dict (rosinality layout or ours) without executing any pickled code."""
    return load_any_checkpoint(path, map_location, allowed_globals=ALLOWED_GLOBALS)


def require_finite(state: dict[str, torch.Tensor], what: str) -> None:
    """CheckpointError naming the tensors that hold NaN or inf: such weights (a diverged run) render black
    images without any error, so every network built from a checkpoint is checked here, once, at load."""
    bad = [f"{key} ({int((~torch.isfinite(t)).sum())} of {t.numel()})" for key, t in state.items()
           if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        shown = ", ".join(bad[:8]) + (f", ... ({len(bad)} tensors in all)" if len(bad) > 8 else "")
        raise CheckpointError(f"{what} holds non-finite weights (NaN or inf) in {shown}; the run that wrote it "
                              f"probably diverged: use an earlier checkpoint")


def _args_dict(checkpoint: dict[str, Any]) -> dict[str, Any]:
    args = checkpoint.get("args")
    if isinstance(args, argparse.Namespace):
        return vars(args)
    return dict(args) if isinstance(args, dict) else {}


def infer_generator_kwargs(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Generator constructor arguments read from the shapes of a g / g_ema state dict.

    Needed for checkpoints without `args` (e.g. from convert_weight.py). The channel table is recovered
    from the conv widths, so reduced models (channel_max / channel_base) come back exactly.
    """
    try:
        style_dim = state["style.1.weight"].shape[1]
        n_mlp = sum(1 for key in state if re.fullmatch(r"style\.\d+\.weight", key))
        n_blocks = sum(1 for key in state if re.fullmatch(r"to_rgbs\.\d+\.bias", key))
        size = 2 ** (n_blocks + 2)
        widths = {4: state["conv1.conv.weight"].shape[1]}
        for block in range(n_blocks):
            widths[2 ** (block + 3)] = state[f"convs.{2 * block}.conv.weight"].shape[1]
    except KeyError as exc:
        raise CheckpointError(f"not a StyleGAN2 generator state dict: missing {exc}") from exc
    return {"size": size, "style_dim": style_dim, "n_mlp": n_mlp, **_channel_kwargs(widths)}


def infer_discriminator_kwargs(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Discriminator constructor arguments from the shapes of a d state dict."""
    try:
        n_blocks = sum(1 for key in state if re.fullmatch(r"convs\.\d+\.conv1\.0\.weight", key))
        size = 2 ** (n_blocks + 2)
        widths = {size: state["convs.0.0.weight"].shape[0], 4: state["final_conv.0.weight"].shape[0]}
        for block in range(1, n_blocks + 1):
            widths[size // 2**block] = state[f"convs.{block}.conv2.1.weight"].shape[0]
    except KeyError as exc:
        raise CheckpointError(f"not a StyleGAN2 discriminator state dict: missing {exc}") from exc
    return {"size": size, **_channel_kwargs(widths)}


def _channel_kwargs(widths: dict[int, int]) -> dict[str, Any]:
    """(channel_multiplier, channel_max, channel_base) whose table gives the observed widths.

    The public base (16384) is tried first, so public checkpoints come back as plain `channel_multiplier`.
    """
    low = widths.get(4, 512)
    high = {res: ch for res, ch in widths.items() if res >= 64}
    candidates: list[tuple[int, int]] = [(2, 16384)]
    if high:
        res, ch = min(high.items())
        if ch * res % 16384 == 0 and ch * res >= 16384:
            candidates.insert(0, (ch * res // 16384, 16384))
        candidates += [(multiplier, ch * res // multiplier) for multiplier in (2, 1)]
    for multiplier, base in candidates:
        for channel_max in ((None,) if low == 512 else ()) + (low,):
            table = channel_table(multiplier, channel_max, base)
            if all(table[res] == ch for res, ch in widths.items()):
                kwargs: dict[str, Any] = {"channel_multiplier": multiplier}
                if channel_max is not None:
                    kwargs["channel_max"] = channel_max
                if base != 16384:
                    kwargs["channel_base"] = base
                return kwargs
    raise CheckpointError(f"channel widths {dict(sorted(widths.items()))} match no StyleGAN2 channel table")


def generator_from_checkpoint(checkpoint: dict[str, Any] | str | Path, key: str = "g_ema",
                              **overrides: Any) -> Generator:
    """Build the generator a checkpoint describes (from `args`, else from its shapes) and load it strictly."""
    if not isinstance(checkpoint, dict):
        checkpoint = load_checkpoint(checkpoint)
    if key not in checkpoint:
        raise CheckpointError(f"checkpoint has no {key!r} network; keys: {sorted(checkpoint)}")
    kwargs = infer_generator_kwargs(checkpoint[key])
    args = _args_dict(checkpoint)
    if "lr_mlp" in args:
        kwargs["lr_mlp"] = args["lr_mlp"]  # not visible in shapes, but it scales the stored mapping weights
    kwargs.update(overrides)
    generator = Generator(**kwargs)
    load_state_strict(generator, checkpoint[key], f"checkpoint[{key!r}]")
    require_finite(checkpoint[key], f"checkpoint[{key!r}]")
    return generator


def discriminator_from_checkpoint(checkpoint: dict[str, Any] | str | Path, **overrides: Any) -> Discriminator:
    if not isinstance(checkpoint, dict):
        checkpoint = load_checkpoint(checkpoint)
    if "d" not in checkpoint:
        raise CheckpointError(f"checkpoint has no 'd' network; keys: {sorted(checkpoint)}")
    kwargs = infer_discriminator_kwargs(checkpoint["d"])
    kwargs.update(overrides)
    discriminator = Discriminator(**kwargs)
    load_state_strict(discriminator, checkpoint["d"], "checkpoint['d']")
    require_finite(checkpoint["d"], "checkpoint['d']")
    return discriminator
