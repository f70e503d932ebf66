"""Synthetic Unsup3d data for tests: faces rendered from known symmetric depth maps and symmetric albedo."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from training.unsup3d.config import CameraConfig
from training.unsup3d.renderer import Renderer


def symmetric_scene(n: int, size: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(canonical depth [n, H, W] in 0.9..1.1, albedo [n, 3, H, W] in [-1, 1], both left-right symmetric,
    random light [n, 4] as netL would give)."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen)

    sx, sy, cy = 0.45 + 0.2 * rand(n, 1, 1), 0.6 + 0.2 * rand(n, 1, 1), 0.1 * (rand(n, 1, 1) - 0.5)
    height = 0.06 + 0.03 * rand(n, 1, 1)
    head = torch.exp(-((xx / sx) ** 2 + ((yy - cy) / sy) ** 2) * 2)
    nose = 0.4 * torch.exp(-((xx / 0.12) ** 2 + ((yy - 0.05) / 0.3) ** 2) * 2)
    depth = 1.06 - height * (head + nose)
    base = 0.2 + 0.6 * rand(n, 3, 1, 1)
    eye_y = -0.25 + 0.1 * rand(n, 1, 1, 1)
    eyes = torch.exp(-(((xx.abs() - 0.3) / 0.1) ** 2 + ((yy - eye_y) / 0.07) ** 2))
    mouth = torch.exp(-((xx / 0.25) ** 2 + ((yy - 0.45) / 0.05) ** 2))
    albedo = (base * (1 - 0.7 * eyes - 0.4 * mouth)) * 2 - 1
    light = torch.cat([rand(n, 2) * 0.6 - 0.2, rand(n, 2) * 1.2 - 0.6], 1)
    return depth, albedo.clamp(-1, 1), light


def render_faces(depth: torch.Tensor, albedo: torch.Tensor, light: torch.Tensor, yaw_deg: float = 20.0,
                 seed: int = 1) -> torch.Tensor:
    """Images [n, 3, H, W] in [-1, 1] of the canonical scene lit by `light` and seen from random yaws."""
    from training.unsup3d.config import LossConfig
    from training.unsup3d.model import PhotoGeoAutoencoder

    n, size = depth.shape[0], depth.shape[-1]
    camera = CameraConfig()
    shader = PhotoGeoAutoencoder({}, camera, LossConfig(), size)
    _, _, _, canon = shader.shade(depth, albedo, light)
    gen = torch.Generator().manual_seed(seed)
    view = torch.zeros(n, 6)
    view[:, 1] = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(yaw_deg)
    view[:, 0] = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(yaw_deg / 3)
    renderer = Renderer(size)
    recon_depth, grid = renderer.warp_canon_to_2d(depth, view)
    image = F.grid_sample(canon, grid, mode="bilinear", align_corners=True)
    background = (recon_depth > camera.max_depth + 0.05).unsqueeze(1)
    return torch.where(background, torch.full_like(image, -1.0), image).clamp(-1, 1)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    return ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
