"""Seeded weights, inputs and recorded cases shared by the official-fusion fixture maker and the parity test.

The fixture (tests/fixtures/fusion/parity.pt) stores no weights and no images: `seeded_fusion_state` rebuilds
every tensor from (seed, official key name, shape) with numpy's frozen RandomState streams
(tests/training/stylegan2/parity_weights.seeded_tensor), and `make_inputs` rebuilds the quantised images the
same way. `run_case` runs one case on any model with the official calling convention
`model(face_image, mask_image, style_image)` and returns what the fixture stores: outputs in full, input
gradients as block sums + seeded projections + norms (full for the small canonical maps), and a (sum, norm)
sketch of every parameter gradient and every buffer. tests/fixtures/fusion/record_parity.py runs these on the
official `Semantic_Fusion_Network`; tests/training/fusion/test_network.py runs them on ours.
"""

from __future__ import annotations

import math
import subprocess
import sys
import tempfile
import types
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from tests.training.stylegan2.parity_weights import name_rng, seeded_tensor

SEED = 22
IMAGE = 256  # the official Regressor hard-codes 256 positions of 512 channels: 256 px faces and templates
CANONICAL = 32  # the Zencoder takes any size; small keeps the fixture fast
BLOCK = 8  # input gradients of the 256 px images are stored as sums over 8x8 blocks (a 32x32 thumbnail)
PROJECTIONS = 4  # ... plus this many projections on seeded full-resolution directions
UNIT_UNIFORM = math.sqrt(3.0)  # U(-sqrt 3, sqrt 3) has variance 1
FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "fusion" / "parity.pt"


# ---- weights ----------------------------------------------------------------------------------------------

def _weight_spec(name: str, shape: tuple[int, ...], names: set[str]) -> tuple[float, float, bool]:
    """(scale, offset, absolute) of the unit-variance draw for one official key; chosen so activations stay O(1).

    Convolutions feeding a BatchNorm get He scale (their eval-mode outputs meet running stats near (0, 1));
    every other conv and linear layer 1/sqrt(fan_in); locally connected weights 1/sqrt(in channels) (the
    official init, N(0, 1), would make the regressor's pre-norm values ~300x larger); norm weights 1 + 0.1 u
    (u: the unit-variance draw); PReLU slopes 0.25 + 0.05 u; running variances 1 + 0.2 |u|; blending logits
    0.5 u so that sigmoid(.) != 0.5 (a swapped gamma/beta shows).
    """
    leaf = name.rsplit(".", 1)[-1]
    owner = name.rsplit(".", 1)[0]
    if leaf == "running_mean":
        return 0.1, 0.0, False
    if leaf == "running_var":
        return 0.2, 1.0, True
    if len(shape) == 5:
        return 1.0 / math.sqrt(shape[2]), 0.0, False
    if len(shape) == 4:
        fan_in = math.prod(shape[1:])
        gain = 2.0 if name.startswith(("arcfacenet.", "masknet.")) else 1.0
        return math.sqrt(gain / fan_in), 0.0, False
    if len(shape) == 2:
        return 1.0 / math.sqrt(shape[1]), 0.0, False
    if name.endswith(("prelu.weight", "se.fc.1.weight")):
        return 0.05, 0.25, False
    if leaf == "weight" and (f"{owner}.running_mean" in names or owner.endswith("in3")):
        return 0.1, 1.0, False
    if leaf.startswith("blending_"):
        return 0.5, 0.0, False
    return 0.1, 0.0, False


def seeded_fusion_state(shapes: Mapping[str, Tensor], seed: int = SEED) -> dict[str, Tensor]:
    """Deterministic tensors for every key of an official-layout state dict (no `module.` prefix)."""
    names = set(shapes)
    out: dict[str, Tensor] = {}
    for name, ref in shapes.items():
        shape = tuple(ref.shape)
        if not ref.is_floating_point():  # num_batches_tracked: irrelevant with momentum 0.1
            out[name] = torch.zeros_like(ref, device="cpu")
            continue
        scale, offset, absolute = _weight_spec(name, shape, names)
        # uniform with unit variance: 5x faster to draw than normal (128M values), as good for parity; in place,
        # because the largest tensor is 67M values
        values = name_rng(seed, name).random_sample(shape)
        values *= 2 * UNIT_UNIFORM
        values -= UNIT_UNIFORM
        if absolute:
            np.abs(values, out=values)
        values *= scale
        values += offset
        out[name] = torch.from_numpy(values.astype(np.float32))
    return out


def load_seeded(model: nn.Module, seed: int = SEED, dtype: torch.dtype = torch.float32) -> nn.Module:
    """Fill `model` (ours or the official one) with the seeded weights, strictly, in `dtype`."""
    state = seeded_fusion_state(model.state_dict(), seed)
    model.load_state_dict({k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}, strict=True)
    return model


# ---- inputs -----------------------------------------------------------------------------------------------

def _blocky(name: str, shape: tuple[int, int, int, int], low: int, noise: float) -> np.ndarray:
    """Low-resolution uniform noise repeated to full size plus fine noise, clipped to [-1, 1]."""
    b, c, h, w = shape
    coarse = name_rng(SEED, f"{name}/coarse").uniform(-1, 1, (b, c, low, low))
    image = np.repeat(np.repeat(coarse, h // low, axis=2), w // low, axis=3)
    return np.clip(image + noise * name_rng(SEED, f"{name}/fine").standard_normal(shape), -1, 1)


def _quantised(values: np.ndarray) -> np.ndarray:
    """As ToTensor + Normalize(0.5, 0.5) gives them: 2k/255 - 1, never exactly 0."""
    return 2 * np.round((values + 1) * 127.5) / 255 - 1


def make_inputs(batch: int) -> dict[str, Tensor]:
    """Batch-2 inputs (batch 1 takes the first sample): 256 px face and template, 32 px canonical maps,
    and the output cotangent. Exact zeros exercise the Zencoder's masks: sample 0 has a zero rectangle in
    face channel 0, sample 1 a face whose channel 2 is zero everywhere (an empty mask, hence a zero code)."""
    face = _quantised(_blocky("face", (2, 3, IMAGE, IMAGE), 8, 0.1))
    face[0, 0, :96, :128] = 0.0
    face[1, 2] = 0.0
    template = _quantised(_blocky("template", (2, 3, IMAGE, IMAGE), 16, 0.05))
    canonical = _blocky("canonical", (2, 9, CANONICAL, CANONICAL), 4, 0.1)
    cotangent = name_rng(SEED, "cotangent").standard_normal((2, 14, 512))
    data = {"face": face, "template": template, "canonical": canonical, "cotangent": cotangent}
    return {key: torch.from_numpy(np.ascontiguousarray(value[:batch])).to(torch.float32)
            for key, value in data.items()}


# ---- recording -------------------------------------------------------------------------------------------

def grad_summary(grad: Tensor, name: str) -> dict[str, Tensor]:
    """Block sums, seeded projections and the norm of an image gradient (float64)."""
    grad = grad.detach().double()
    b, c, h, w = grad.shape
    blocks = grad.reshape(b, c, h // BLOCK, BLOCK, w // BLOCK, BLOCK).sum((3, 5))
    directions = [seeded_tensor(SEED, f"projection/{name}/{k}", grad.shape, dtype=torch.float64)
                  for k in range(PROJECTIONS)]
    return {"blocks": blocks, "projections": torch.stack([(grad * d).sum() for d in directions]),
            "norm": grad.norm()}


def sketch(named: list[tuple[str, Tensor | None]]) -> tuple[list[str], Tensor]:
    """(names, (n, 2) float64 rows of sum and L2 norm); None (no gradient) counts as zeros."""
    rows = [torch.zeros(2, dtype=torch.float64) if t is None
            else torch.stack([t.detach().double().sum(), t.detach().double().norm()]) for _, t in named]
    return [name for name, _ in named], torch.stack(rows)


def run_case(model: nn.Module, inputs: Mapping[str, Tensor], *, train: bool, grads: bool,
             dtype: torch.dtype = torch.float32) -> dict[str, object]:
    """One forward (and backward of sum(output * cotangent)) in the given mode; inputs cast to dtype."""
    model.train(train)
    model.zero_grad(set_to_none=True)
    x = {k: v.detach().to(dtype, copy=True).requires_grad_(grads and k != "cotangent") for k, v in inputs.items()}
    with torch.set_grad_enabled(grads):
        output = model(x["face"], x["template"], x["canonical"])
    result: dict[str, object] = {"output": output.detach().clone()}
    if grads:
        (output * x["cotangent"]).sum().backward()
        result["grad_face"] = grad_summary(x["face"].grad, "face")
        result["grad_template"] = grad_summary(x["template"].grad, "template")
        result["grad_canonical"] = x["canonical"].grad.detach().double()
        result["param_names"], result["param_grads"] = sketch([(n, p.grad) for n, p in model.named_parameters()])
    result["buffer_names"], result["buffers"] = sketch([(n, b) for n, b in model.named_buffers()
                                                        if b.is_floating_point()])
    model.zero_grad(set_to_none=True)
    return result


def zero_identity_channels(state: Mapping[str, Tensor], channels: tuple[int, ...]) -> dict[str, Tensor]:
    """Seeded weights with ArcFace output channels `channels` forced to exactly 0 everywhere (eval mode).

    The last two IRBlocks end in prelu(bn2(...) * se + shortcut); zero bn2 scale and shift on a channel (and the
    shortcut BN of layer4.0) and that channel is prelu(0 + 0) = 0. With channel 2 zero, ACE's region 2 is empty
    and fc_mu1 decides the style map; with channels 1 and 2 zero, fc_mu0 does.
    """
    state = dict(state)
    for key in ("layer4.0.bn2", "layer4.0.downsample.1", "layer4.1.bn2"):
        for leaf in ("weight", "bias"):
            name = f"arcfacenet.{key}.{leaf}"
            tensor = state[name].clone()
            tensor[list(channels)] = 0.0
            state[name] = tensor
    return state


# ---- the official code (recording only) ---------------------------------------------------------------

def official_sources(path: str | Path) -> tuple[Path, str]:
    """(folder holding model.py and localconntect.py, commit or 'unknown') from a checkout, a bare mirror
    (exported with `git show`) or a folder with the two files."""
    path = Path(path)
    if (path / "model.py").is_file() and (path / "localconntect.py").is_file():
        try:
            commit = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True,
                                    text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            commit = "unknown"
        return path, commit
    commit = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    folder = Path(tempfile.mkdtemp(prefix="sdgan-official-"))
    for name in ("model.py", "localconntect.py"):
        blob = subprocess.run(["git", "-C", str(path), "show", f"{commit}:{name}"], capture_output=True, check=True)
        (folder / name).write_bytes(blob.stdout)
    return folder, commit


def import_official(folder: str | Path) -> types.ModuleType:
    """The official `model` module (it imports only torch and its sibling localconntect)."""
    folder = str(Path(folder).resolve())
    sys.path.insert(0, folder)
    try:
        import model
    finally:
        sys.path.remove(folder)
    if not str(Path(model.__file__).resolve()).startswith(folder):
        raise ImportError(f"imported {model.__file__}, not the official model.py from {folder}")
    return model
