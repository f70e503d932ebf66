"""Unsup3d's photo-geometric autoencoder (Wu et al., CVPR 2020): one forward pass and its losses.

From a 64 px face in [-1, 1]: netD gives the canonical depth (mean-centred, tanh, mapped to the depth range,
2-pixel left/right border pinned to `border_depth`), netA the canonical albedo, netL the light (ambient and
diffuse strength, direction), netV the view (6 numbers), netC the confidence maps (64 px for the L1 term,
16 px for the perceptual one). Symmetry: the second half of the batch is the horizontally flipped canonical
depth and albedo with the same light and view. The canonical image is albedo x shading; it is warped into
the predicted view through the renderer (depth of the canonical mesh seen from the view, then `grid_sample`),
and compared with the input by a confidence-weighted L1 NLL (sqrt(2) |d| / sigma + log sigma) and, when VGG16
weights are given, a perceptual NLL on relu3_3 (16 px). Loss: L1 + lam_flip L1_flip + lam_perc (P + lam_flip
P_flip).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.unsup3d.config import CameraConfig, LossConfig, ModelConfig
from training.unsup3d.networks import NET_NAMES, NetConfig
from training.unsup3d.renderer import EPS, Renderer, scale_view

__all__ = ["Outputs", "PhotoGeoAutoencoder", "VGG16Features", "build_networks", "load_vgg16", "photometric_loss"]


def build_networks(model: ModelConfig) -> dict[str, nn.Module]:
    """netD, netA, netL, netV (and netC) at the configured widths (the defaults give celeba_networks())."""
    configs = {
        "netD": NetConfig("EDDeconv", 3, 1, nf=model.nf, zdim=model.zdim, tanh=False),
        "netA": NetConfig("EDDeconv", 3, 3, nf=model.nf, zdim=model.zdim),
        "netL": NetConfig("Encoder", 3, 4, nf=model.encoder_nf),
        "netV": NetConfig("Encoder", 3, 6, nf=model.encoder_nf),
        "netC": NetConfig("ConfNet", 3, 2, nf=model.conf_nf, zdim=model.conf_zdim),
    }
    return {name: config.build() for name, config in configs.items() if model.use_conf or name != "netC"}


def photometric_loss(a: Tensor, b: Tensor, mask: Tensor | None = None, sigma: Tensor | None = None) -> Tensor:
    """Mean |a - b|, or its Laplacian NLL `sqrt(2) |a - b| / sigma + log sigma`, over the mask."""
    loss = (a - b).abs()
    if sigma is not None:
        loss = loss * math.sqrt(2) / (sigma + EPS) + (sigma + EPS).log()
    if mask is None:
        return loss.mean()
    mask = mask.expand_as(loss)
    return (loss * mask).sum() / mask.sum().clamp(min=EPS)


class VGG16Features(nn.Module):
    """torchvision's `vgg16().features[:16]` (up to relu3_3), rebuilt so its state dict loads without torchvision."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for item in (64, 64, "M", 128, 128, "M", 256, 256, 256):
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, int(item), 3, padding=1), nn.ReLU(inplace=False)]
                cin = int(item)
        self.features = nn.Sequential(*layers)

    def forward(self, image: Tensor) -> Tensor:
        return self.features(image)


def load_vgg16(path: str | Path) -> nn.Module:
    """VGG16 relu3_3 features from a torchvision state dict (`features.N.*`, extra keys ignored) or TorchScript.

    A TorchScript module must map an ImageNet-normalised image to its relu3_3 features.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"VGG16 weights not found: {path}")
    if _is_torchscript(path):
        module = torch.jit.load(str(path), map_location="cpu")
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        net = VGG16Features()
        wanted = net.state_dict()
        picked = {key: value for key, value in state.items() if key in wanted}
        missing = sorted(set(wanted) - set(picked))
        if missing:
            raise ValueError(f"{path} is not a VGG16 state dict: it lacks {missing[:4]}") from None
        net.load_state_dict(picked)
        module = net
    module.eval()
    for param in module.parameters():
        param.requires_grad_(False)
    return module


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive is a zip holding `<name>/code/` sources; a state dict's zip has none."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


class PerceptualLoss(nn.Module):
    """Unsup3d's perceptual NLL on relu3_3: (f1 - f2)^2 / (2 sigma^2) + log sigma, mask average-pooled to 16 px."""

    def __init__(self, features: nn.Module) -> None:
        super().__init__()
        self.features = features
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, a: Tensor, b: Tensor, mask: Tensor | None = None, sigma: Tensor | None = None) -> Tensor:
        images = (torch.cat([a, b], 0) / 2 + 0.5 - self.mean) / self.std
        fa, fb = self.features(images).chunk(2, 0)
        loss = (fa - fb) ** 2
        if sigma is not None:
            loss = loss / (2 * sigma**2 + EPS) + (sigma + EPS).log()
        if mask is None:
            return loss.mean()
        factor = mask.shape[-1] // loss.shape[-1]
        pooled = F.avg_pool2d(mask, factor, factor).expand_as(loss)
        return (loss * pooled).sum() / pooled.sum().clamp(min=EPS)


@dataclass
class Outputs:
    """One forward pass; maps of the doubled batch (first half: as predicted, second: flipped canonical)."""

    input: Tensor  # [B, 3, H, W] in [-1, 1]
    canon_depth: Tensor  # [2B, H, W]
    canon_albedo: Tensor  # [2B, 3, H, W]
    canon_normal: Tensor  # [2B, H, W, 3]
    canon_diffuse_shading: Tensor  # [2B, 1, H, W]
    canon_shading: Tensor  # [2B, 1, H, W]
    canon_image: Tensor  # [2B, 3, H, W]
    light: Tensor  # [2B, 4]: ambient, diffuse, direction x, y
    view: Tensor  # [2B, 6] (radians, translations)
    recon_depth: Tensor  # [2B, H, W]
    recon_image: Tensor  # [2B, 3, H, W] (masked)
    recon_mask: Tensor  # [2B, 1, H, W]
    losses: dict[str, Tensor]


class PhotoGeoAutoencoder(nn.Module):
    """The five networks, the renderer and the loss; `forward(images)` -> Outputs with `losses["total"]`."""

    def __init__(self, nets: dict[str, nn.Module], camera: CameraConfig, loss: LossConfig, image_size: int = 64,
                 perceptual: nn.Module | None = None) -> None:
        super().__init__()
        for name in NET_NAMES:
            if name in nets:
                self.add_module(name, nets[name])
        self.has_conf = "netC" in nets
        self.camera, self.loss_config = camera, loss
        self.renderer = Renderer(image_size, camera.min_depth, camera.max_depth, camera.rot_center_depth,
                                 camera.fov, backend=camera.renderer)
        self.perceptual = PerceptualLoss(perceptual) if perceptual is not None else None

    @property
    def net_names(self) -> list[str]:
        return [name for name in NET_NAMES if hasattr(self, name)]

    def _rescale(self, x: Tensor, low: float, high: float) -> Tensor:
        return (1 + x) / 2 * high + (1 - x) / 2 * low

    def canonical(self, images: Tensor) -> dict[str, Tensor]:
        """Canonical depth, albedo, light, view and confidences of a batch (no flip, no rendering)."""
        b, _, h, w = images.shape
        cam = self.camera
        raw = self.netD(images).squeeze(1)
        depth = self._rescale(torch.tanh(raw - raw.reshape(b, -1).mean(1).view(b, 1, 1)), cam.min_depth,
                              cam.max_depth)
        border = torch.zeros(h, w, dtype=torch.bool, device=images.device)
        border[:, :2] = border[:, -2:] = True
        depth = torch.where(border, torch.full_like(depth, cam.border), depth)
        out = {"depth": depth, "albedo": self.netA(images), "light": self.netL(images),
               "view": scale_view(self.netV(images), cam.xyz_rotation_range, cam.xy_translation_range,
                                  cam.z_translation_range)}
        if self.has_conf:
            out["conf_l1"], out["conf_perc"] = self.netC(images)
        return out

    def shade(self, depth: Tensor, albedo: Tensor, light: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(normal, diffuse shading, shading, image) of a canonical depth and albedo under a netL light."""
        cam = self.camera
        ambient = self._rescale(light[:, :1], cam.min_amb_light, cam.max_amb_light)
        diffuse = self._rescale(light[:, 1:2], cam.min_diff_light, cam.max_diff_light)
        direction = torch.cat([light[:, 2:], torch.ones_like(light[:, :1])], 1)
        direction = direction / direction.pow(2).sum(1, keepdim=True).sqrt()
        normal = self.renderer.get_normal_from_depth(depth)
        diffuse_shading = (normal * direction.view(-1, 1, 1, 3)).sum(3).clamp(min=0).unsqueeze(1)
        shading = ambient.view(-1, 1, 1, 1) + diffuse.view(-1, 1, 1, 1) * diffuse_shading
        image = (albedo / 2 + 0.5) * shading * 2 - 1
        return normal, diffuse_shading, shading, image

    def forward(self, images: Tensor) -> Outputs:
        b = images.shape[0]
        cam, lam = self.camera, self.loss_config
        canon = self.canonical(images)
        depth = torch.cat([canon["depth"], canon["depth"].flip(2)], 0)
        albedo = torch.cat([canon["albedo"], canon["albedo"].flip(3)], 0)
        light = canon["light"].repeat(2, 1)
        view = canon["view"].repeat(2, 1)
        normal, diffuse_shading, shading, canon_image = self.shade(depth, albedo, light)
        recon_depth, grid = self.renderer.warp_canon_to_2d(depth, view)
        recon = F.grid_sample(canon_image, grid, mode="bilinear", align_corners=True)
        margin = (cam.max_depth - cam.min_depth) / 2
        valid = (recon_depth < cam.max_depth + margin).to(images.dtype)  # background was clamped to max + margin
        both = (valid[:b] * valid[b:]).repeat(2, 1, 1).unsqueeze(1).detach()
        recon = recon * both
        sig_l1 = sig_l1_flip = sig_p = sig_p_flip = None
        if self.has_conf:
            sig_l1, sig_l1_flip = canon["conf_l1"][:, :1], canon["conf_l1"][:, 1:]
            sig_p, sig_p_flip = canon["conf_perc"][:, :1], canon["conf_perc"][:, 1:]
        losses = {"l1": photometric_loss(recon[:b], images, both[:b], sig_l1),
                  "l1_flip": photometric_loss(recon[b:], images, both[b:], sig_l1_flip)}
        total = losses["l1"] + lam.lam_flip * losses["l1_flip"]
        if self.perceptual is not None:
            losses["perc"] = self.perceptual(recon[:b], images, both[:b], sig_p)
            losses["perc_flip"] = self.perceptual(recon[b:], images, both[b:], sig_p_flip)
            total = total + lam.lam_perc * (losses["perc"] + lam.lam_flip * losses["perc_flip"])
        if lam.lam_depth_sm > 0:
            span = cam.max_depth - cam.min_depth
            smooth = ((depth[:b, :-1] - depth[:b, 1:]) / span).abs().mean() + \
                ((depth[:b, :, :-1] - depth[:b, :, 1:]) / span).abs().mean()
            losses["depth_sm"] = smooth
            total = total + lam.lam_depth_sm * smooth
        losses["total"] = total
        with torch.no_grad():
            losses["recon_l1"] = ((recon[:b] - images).abs() * both[:b]).sum() / both[:b].expand_as(images).sum()
        return Outputs(input=images, canon_depth=depth, canon_albedo=albedo, canon_normal=normal,
                       canon_diffuse_shading=diffuse_shading, canon_shading=shading, canon_image=canon_image,
                       light=light, view=view, recon_depth=recon_depth, recon_image=recon, recon_mask=both,
                       losses=losses)

    @torch.no_grad()
    def visual_rows(self, images: Tensor) -> Tensor:
        """[B, 6, 3, H, W] in [-1, 1]: input | reconstruction | canonical depth | normal | shading | albedo."""
        out = self.forward(images)
        b = images.shape[0]
        cam = self.camera
        depth = ((out.canon_depth[:b] - cam.min_depth) / (cam.max_depth - cam.min_depth)).clamp(0, 1)
        depth = (depth * 2 - 1).unsqueeze(1).expand(-1, 3, -1, -1)
        normal = out.canon_normal[:b].permute(0, 3, 1, 2)
        shading = (out.canon_diffuse_shading[:b] * 2 - 1).expand(-1, 3, -1, -1)
        tiles = [images, out.recon_image[:b], depth, normal, shading, out.canon_albedo[:b]]
        return torch.stack([t.clamp(-1, 1) for t in tiles], 1)
