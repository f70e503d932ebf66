"""Official-format inputs for the synthesize tests, made by the tests: a tiny rosinality StyleGAN2 `.pt`, an
Unsup3d `checkpoint030.pth`-layout file, fusion `checkpoint_latest.pt` files in the official layout (no `arch`
entry: the shapes say it), a straight-alpha template PNG and the `w_<kind>_test_<N>.json` /
`<kind>_interfacegan_test_<N>.json` lists."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tests.training.fusion.pairs_helpers import N_LATENT, STYLE_DIM, write_generator
from tests.training.fusion_pairs.upstream import write_unsup3d
from training.common.checkpoint import save_checkpoint
from training.fusion.checkpoint import fusion_state_dict
from training.fusion.network import FusionArch, SemanticFusionNetwork

ARCH = FusionArch(image_size=32, widths=(4, 8, 8, 16), encoder_width=4, style_length=16, spade_hidden=8,
                  w_dim=STYLE_DIM, num_ws=N_LATENT)


def write_official_fusion(path: Path, seed: int = 0, arch: FusionArch = ARCH) -> Path:
    """`{"model": DataParallel state dict}` exactly as the official test.py reads it, with a non-trivial n_o."""
    torch.manual_seed(seed)
    model = SemanticFusionNetwork(arch)
    with torch.no_grad():
        model.regre.in3.weight.fill_(0.3)  # a visible offset
    save_checkpoint(path, {"model": fusion_state_dict(model)})
    return path


def write_template(path: Path) -> Path:
    """An RGBA surgical-mask-like PNG: opaque blue lower half of an ellipse, transparent elsewhere."""
    size = 128
    yy, xx = np.mgrid[0:size, 0:size]
    inside = (((xx - 64) / 56.0) ** 2 + ((yy - 40) / 60.0) ** 2 <= 1) & (yy >= 40)
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[inside] = (90, 160, 220, 255)
    Image.fromarray(rgba, "RGBA").save(path)
    return path


def write_test_json(folder: Path, n: int, kind: str = "mask", seed: int = 0, dim: int = STYLE_DIM
                    ) -> tuple[Path, Path]:
    """(w file, n_b file) as lists of vectors, as the official data/ files."""
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 1, (n, dim))
    nb = rng.normal(0, 0.5, (n, dim))
    w_path, nb_path = folder / f"w_{kind}_test_{n}.json", folder / f"{kind}_interfacegan_test_{n}.json"
    w_path.write_text(json.dumps(w.tolist()))
    nb_path.write_text(json.dumps(nb.tolist()))
    return w_path, nb_path


def official_files(folder: Path, n: int = 3) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    w, nb = write_test_json(folder, n)
    return {"generator": write_generator(folder / "network-snapshot-020180.pt"),
            "unsup3d": write_unsup3d(folder / "checkpoint030.pth", official=True),
            "fusion": write_official_fusion(folder / "checkpoint_latest.pt"),
            "template": write_template(folder / "surgical.png"), "test_w": w, "test_nb": nb}


def files_config(files: dict[str, Path], **values: object):
    from inference.synthesis.config import SynthesizeConfig

    data = {"attributes": ["face_mask"], "fusion": str(files["fusion"]), "generator": str(files["generator"]),
            "unsup3d": str(files["unsup3d"]), "test_w": str(files["test_w"]), "test_nb": str(files["test_nb"]),
            "templates": {"face_mask": str(files["template"])}, "detector": "none", "batch_size": 2,
            "strengths": [0.0, 1.0], "strength_samples": 2, "grid_rows": 2, "mean_samples": 64,
            "runtime": {"device": "cpu", "threads": 1}}
    data.update(values)
    return SynthesizeConfig.model_validate(data)
