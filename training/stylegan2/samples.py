"""Seeded latents and image grids: the same seeds give the same faces in every run and in `sdgan generate`.

The PNG and grid writers are generic (`training.common.images`); they are re-exported here for callers that
take everything sample-related from one module.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from training.common.images import image_grid, save_grid, save_png, to_uint8

__all__ = ["generate_images", "image_grid", "parse_seeds", "save_grid", "save_png", "seeded_z", "to_uint8"]


def parse_seeds(text: str) -> list[int]:
    """'0-3,7,10-11' -> [0, 1, 2, 3, 7, 10, 11] (the stylegan2-ada `--seeds` syntax)."""
    seeds: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        start, sep, end = part.partition("-")
        try:
            low, high = int(start), int(end) if sep else int(start)
        except ValueError as exc:
            raise ValueError(f"seeds must look like '0-15' or '1,5,9', got {text!r}") from exc
        if high < low or low < 0:
            raise ValueError(f"bad seed range {part!r} in {text!r}")
        seeds.extend(range(low, high + 1))
    if not seeds:
        raise ValueError(f"no seeds in {text!r}")
    return seeds


def seeded_z(seeds: Sequence[int], style_dim: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """One z per seed, each from its own generator: a seed's face does not depend on the others."""
    rows = [torch.randn(style_dim, generator=torch.Generator().manual_seed(int(seed))) for seed in seeds]
    return torch.stack(rows).to(device)


@torch.no_grad()
def generate_images(generator: torch.nn.Module, z: torch.Tensor, truncation: float = 1.0,
                    truncation_latent: torch.Tensor | None = None, batch: int = 16,
                    noise_mode: str = "const") -> torch.Tensor:
    """Images for the given z in batches; noise 'const' uses the generator's stored noise maps (repeatable)."""
    outputs = []
    for chunk in z.split(batch):
        image, _ = generator([chunk], truncation=truncation, truncation_latent=truncation_latent,
                             randomize_noise=noise_mode == "random")
        outputs.append(image.float().cpu())
    return torch.cat(outputs)
