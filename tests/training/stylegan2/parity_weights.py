"""Deterministic weights and the parity cases shared by the rosinality fixture maker and the parity test.

`seeded_state_dict` makes a full state dict from parameter names and shapes only, so our StyleGAN2 and
rosinality/stylegan2-pytorch's get identical tensors without the weights being stored anywhere: each tensor
comes from its own numpy RandomState (a frozen, version-stable stream) seeded by sha256(seed, name). Blur
and upsample kernels are the one exception: they are constants of the architecture, so they are copied
from the reference state dict the caller passes in (which is how a kernel bug in either implementation
shows up as an output difference instead of being papered over).

`generator_cases` / `discriminator_cases` run the recorded cases on any implementation with rosinality's
calling convention; `benchmarks/make_stylegan2_parity.py` runs them on rosinality's model to write
tests/fixtures/stylegan2/parity.pt and tests/training/stylegan2/test_parity.py runs them on ours.
"""

from __future__ import annotations

import hashlib
import sys
import types
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

MAPPING_LR_MUL = 0.01  # rosinality's lr_mlp default: mapping weights are stored pre-divided by it


def name_rng(seed: int, name: str) -> np.random.RandomState:
    """A RandomState for one tensor: depends on (seed, name) only."""
    digest = hashlib.sha256(f"{int(seed)}/{name}".encode()).digest()
    return np.random.RandomState(int.from_bytes(digest[:4], "little"))


def seeded_tensor(seed: int, name: str, shape: tuple[int, ...] | torch.Size, scale: float = 1.0,
                  offset: float = 0.0, dtype: torch.dtype = torch.float32) -> Tensor:
    values = name_rng(seed, name).standard_normal(tuple(shape)) * scale + offset
    return torch.from_numpy(np.ascontiguousarray(values)).to(dtype)


def _scale_offset(name: str, mapping_lr_mul: float) -> tuple[float, float]:
    """Standard-normal scale and offset per parameter kind, chosen by name (rosinality's key layout).

    Equalized-lr weights are stored as N(0, 1) and scaled at run time by 1/sqrt(fan_in), so N(0, 1) keeps
    activations O(1) through the deep discriminator (a smaller scale would shrink them layer after layer
    and let a wrong output hide under an absolute tolerance). Mapping weights and biases are stored divided
    by lr_mul; modulation biases sit around 1 (rosinality's bias_init=1); noise strengths are about 0.1,
    nonzero so that the noise inputs matter.
    """
    leaf = name.rsplit(".", 1)[-1]
    if name.startswith("style."):
        return (1.0 / mapping_lr_mul, 0.0) if leaf == "weight" else (0.1 / mapping_lr_mul, 0.0)
    if name.endswith("modulation.bias"):
        return 0.1, 1.0
    if name.endswith(("noise.weight", "noise_strength")):
        return 0.02, 0.1
    if name.startswith("noises.") or name.endswith("input.input"):
        return 1.0, 0.0
    if leaf == "bias":
        return 0.1, 0.0
    return 1.0, 0.0


def seeded_state_dict(shapes: Mapping[str, Tensor | torch.Size | tuple[int, ...]], seed: int, *,
                      mapping_lr_mul: float = MAPPING_LR_MUL) -> dict[str, Tensor]:
    """Deterministic tensors for every key of `shapes` (a state dict, or name -> shape).

    Keys containing "kernel" (blur / upsample FIR kernels, fixed buffers) are copied unchanged from the
    given state dict; they need a tensor, not a bare shape. Everything else, the `noises.noise_i` buffers
    included, is regenerated from (seed, name, shape).
    """
    out: dict[str, Tensor] = {}
    for name, ref in shapes.items():
        if "kernel" in name:
            if not isinstance(ref, Tensor):
                raise ValueError(f"{name}: kernels are copied from the reference state dict, pass tensors")
            out[name] = ref.detach().clone()
            continue
        shape = ref.shape if isinstance(ref, Tensor) else torch.Size(ref)
        dtype = ref.dtype if isinstance(ref, Tensor) and ref.is_floating_point() else torch.float32
        scale, offset = _scale_offset(name, mapping_lr_mul)
        out[name] = seeded_tensor(seed, name, shape, scale, offset, dtype)
    return out


def load_seeded(model: nn.Module, seed: int) -> nn.Module:
    """Fill `model` in place with seeded_state_dict(its own state dict, seed), strictly."""
    model.load_state_dict(seeded_state_dict(model.state_dict(), seed), strict=True)
    return model


def import_rosinality(directory: str | Path) -> types.ModuleType:
    """rosinality's `model` module, CPU only: its op/ package compiles CUDA extensions at import time
    (torch.utils.cpp_extension.load), so that is replaced by a stub first; on CPU tensors the ops take
    their pure PyTorch fallbacks (upfirdn2d_native, leaky_relu) and never touch the stub."""
    directory = str(Path(directory).resolve())
    if not Path(directory, "model.py").is_file():
        raise FileNotFoundError(f"{directory}/model.py: not a rosinality/stylegan2-pytorch checkout")
    from torch.utils import cpp_extension

    real_load = cpp_extension.load
    cpp_extension.load = lambda *args, **kwargs: types.SimpleNamespace()
    sys.path.insert(0, directory)
    try:
        import model
    finally:
        cpp_extension.load = real_load
    if not str(Path(model.__file__).resolve()).startswith(directory):
        raise ImportError(f"imported {model.__file__}, not rosinality's model.py from {directory}")
    return model


# ---- the recorded cases -------------------------------------------------------------------------------

def grad_sketch(module: nn.Module) -> tuple[list[str], Tensor]:
    """Per-parameter (sum, L2 norm) of .grad: small enough to store, catches a wrong backward anywhere."""
    names, rows = [], []
    for name, param in module.named_parameters():
        grad = param.grad if param.grad is not None else torch.zeros_like(param)
        names.append(name)
        rows.append(torch.stack([grad.sum(), grad.norm()]))
    return names, torch.stack(rows).detach()


def make_inputs(g: nn.Module, d_size: int, seed: int, *, d_batch: int) -> dict[str, object]:
    """Fixed inputs for one config (stored in the fixture, so the RNG here only has to run once)."""
    gen = torch.Generator().manual_seed(seed)
    style_dim, n_latent, size = g.style_dim, g.n_latent, g.size
    noise = [torch.randn(1, 1, 2 ** ((i + 5) // 2), 2 ** ((i + 5) // 2), generator=gen)
             for i in range(g.num_layers)]
    return {
        "z1": torch.randn(2, style_dim, generator=gen),
        "z2": torch.randn(2, style_dim, generator=gen),
        "noise": noise,
        "truncation_latent": torch.randn(1, style_dim, generator=gen) * 0.5,
        "w_plus": torch.randn(2, n_latent, style_dim, generator=gen),
        "image_cotangent": torch.randn(2, 3, size, size, generator=gen),
        "d_images": torch.randn(d_batch, 3, d_size, d_size, generator=gen),
        "inject_index": 3,
        "truncation": 0.7,
    }


def generator_cases(g: nn.Module, inputs: Mapping[str, object], *, full: bool = True) -> dict[str, object]:
    """The generator outputs the fixture records (float32 CPU). full=False keeps the plain, mapping and
    backward cases only (the larger config, to keep the fixture small)."""
    z1, noise = inputs["z1"], list(inputs["noise"])
    out: dict[str, object] = {}
    with torch.no_grad():
        # (a) plain z, explicit noise
        image, latent = g([z1], noise=noise, randomize_noise=False, return_latents=True)
        out["plain_image"], out["plain_latents"] = image, latent
        # (e) return_latents=False gives None
        out["no_latents_is_none"] = int(g([z1], noise=noise, randomize_noise=False)[1] is None)
        # (f) mapping network
        out["get_latent"] = g.get_latent(z1)
    if full:
        out.update(_generator_variants(g, inputs))
    # (h) backward: d sum(image * cotangent) / dW and every parameter's gradient (the image itself is
    # plain_image: same W, same noise)
    g.zero_grad(set_to_none=True)
    w = g.get_latent(z1)
    w.retain_grad()
    image, _ = g([w], input_is_latent=True, noise=noise, randomize_noise=False)
    (image * inputs["image_cotangent"]).sum().backward()
    out["grad_w"] = w.grad.detach().clone()
    out["grad_param_names"], out["grad_params"] = grad_sketch(g)
    g.zero_grad(set_to_none=True)
    return out


@torch.no_grad()
def _generator_variants(g: nn.Module, inputs: Mapping[str, object]) -> dict[str, object]:
    z1, z2, noise = inputs["z1"], inputs["z2"], list(inputs["noise"])
    out: dict[str, object] = {}
    # (b) style mixing, with the stored noise buffers (noise=None, randomize_noise=False)
    image, latent = g([z1, z2], inject_index=inputs["inject_index"], randomize_noise=False, return_latents=True)
    out["mixing_image"], out["mixing_latents"] = image, latent
    # (c) truncation around a fixed latent (g.mean_latent samples at random, so it is not used)
    image, _ = g([z1], truncation=inputs["truncation"], truncation_latent=inputs["truncation_latent"],
                 noise=noise, randomize_noise=False)
    out["truncation_image"] = image
    # (d) W+ input
    image, latent = g([inputs["w_plus"]], input_is_latent=True, noise=noise, randomize_noise=False,
                      return_latents=True)
    out["w_plus_image"], out["w_plus_latents"] = image, latent
    return out


def discriminator_cases(d: nn.Module, inputs: Mapping[str, object]) -> dict[str, object]:
    images = inputs["d_images"]
    out: dict[str, object] = {}
    with torch.no_grad():
        # (g) logits, the full batch (minibatch-stddev groups of 4 when the batch is 8) and the first two
        out["logits"] = d(images)
        if len(images) > 2:
            out["logits_batch2"] = d(images[:2])
    # (h) backward: d sum(D(x)) / dx and every parameter's gradient
    d.zero_grad(set_to_none=True)
    x = images.clone().requires_grad_(True)
    d(x).sum().backward()
    out["grad_input"] = x.grad.detach().clone()
    out["grad_param_names"], out["grad_params"] = grad_sketch(d)
    d.zero_grad(set_to_none=True)
    return out


# Recorded a second time in float64 (small tensors only): float32 backward through the 512-channel
# synthesis network carries ~1e-3 relative rounding noise (rosinality against itself in float64), so the
# tight backward check runs in float64 while the float32 gradients get a looser tolerance.
FLOAT64_KEYS = {"g": ("get_latent", "grad_w", "grad_param_names", "grad_params"),
                "d": ("logits", "logits_batch2", "grad_param_names", "grad_params")}


def to_dtype(value, dtype: torch.dtype):
    """Floating tensors (also inside lists and dicts) cast to dtype; anything else unchanged."""
    if isinstance(value, Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, list):
        return [to_dtype(item, dtype) for item in value]
    if isinstance(value, dict):
        return {key: to_dtype(item, dtype) for key, item in value.items()}
    return value


def float64_cases(g: nn.Module, d: nn.Module, inputs: Mapping[str, object]) -> dict[str, dict[str, object]]:
    """The FLOAT64_KEYS outputs of g and d run in float64 (the models are cast in place)."""
    inputs64 = to_dtype(dict(inputs), torch.float64)
    g_out = generator_cases(g.double(), inputs64, full=False)
    d_out = discriminator_cases(d.double(), inputs64)
    return {"g": {k: g_out[k] for k in FLOAT64_KEYS["g"] if k in g_out},
            "d": {k: d_out[k] for k in FLOAT64_KEYS["d"] if k in d_out}}
