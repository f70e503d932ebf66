"""Canonical 3D maps of faces, as SD-GAN's Unsup3d demo (`unsup3d_main.Demo`) computes them, and the fusion input.

`canonical_maps` runs the four networks on aligned faces and returns the demo's six outputs (input, canonical
depth, normal, diffuse shading, albedo, canonical image) upsampled to `size` (128 in SD-GAN). The arithmetic is
the demo's: depth centred, tanh, rescaled to [0.9, 1.1], two border columns at 1.05; light ambient/diffuse
terms l/2 + 0.5 and direction normalise(lx, ly, 1); normals from the depth by perspective unprojection (fov 10°)
and a cross product of grid neighbours (`normal_from_depth`); shading max(0, n·l); canonical image
(albedo/2 + 0.5)·(a + b·shading)·2 − 1; bilinear upsampling, normals renormalised afterwards.

`fusion_input` stacks three maps into the 9 channels of SD-GAN's fusion network. Which three the authors used
is not published; the default is normal + diffuse shading + albedo, each scaled to [-1, 1] (README, "Unsup3d").
`demo_arrays` reproduces the demo's uint8/uint16 exports; `demo_crop` its crop of an unaligned photo around a
face box (from `alignment.detect` here instead of MTCNN).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

IMAGE_SIZE = 64  # the networks' input size
MIN_DEPTH, MAX_DEPTH = 0.9, 1.1
DEMO_BORDER_DEPTH = 1.05  # the demo's (training uses 0.7·max + 0.3·min = 1.04)
FOV_DEGREES = 10.0
EPS = 1e-7
MAP_NAMES = ("input", "depth", "normal", "shading", "albedo", "image")
# The demo's names for the six outputs, in out_results() order.
DEMO_NAMES = {"input": "input_image", "depth": "canonical_depth", "normal": "canonical_normal",
              "shading": "canonical_diffuse_shading", "albedo": "canonical_albedo", "image": "canonical_image"}
DEFAULT_FUSION_CHANNELS = ("normal", "shading", "albedo")
SCALINGS = ("signed", "unit")


# ----------------------------------------------------------------------------------------------------------------
# Geometry


def intrinsics(size: int, fov: float = FOV_DEGREES, device: torch.device | str = "cpu") -> Tensor:
    """Unsup3d's pinhole K for a size x size image: f = (size−1)/2 / tan(fov/2), principal point at the centre."""
    focal = (size - 1) / 2 / math.tan(math.radians(fov) / 2)
    centre = (size - 1) / 2
    return torch.tensor([[focal, 0.0, centre], [0.0, focal, centre], [0.0, 0.0, 1.0]], device=device)


def depth_to_points(depth: Tensor, fov: float = FOV_DEGREES) -> Tensor:
    """(B, H, W) depth -> (B, H, W, 3) camera-space points d·K⁻¹(u, v, 1), u the column and v the row (pixels)."""
    b, h, w = depth.shape
    if h != w:
        raise ValueError(f"Unsup3d's camera is defined for square maps, got {h}x{w}")
    rows = torch.arange(h, device=depth.device, dtype=depth.dtype)
    cols = torch.arange(w, device=depth.device, dtype=depth.dtype)
    v, u = torch.meshgrid(rows, cols, indexing="ij")
    pixels = torch.stack([u, v, torch.ones_like(u)], dim=-1)  # (H, W, 3)
    inv_k = torch.linalg.inv(intrinsics(w, fov, depth.device).to(torch.float64)).to(depth.dtype)
    return (pixels @ inv_k.T).unsqueeze(0) * depth.unsqueeze(-1)


def normal_from_depth(depth: Tensor, fov: float = FOV_DEGREES) -> Tensor:
    """Unit normals (B, H, W, 3) of a (B, H, W) depth map, with Unsup3d's get_normal_from_depth semantics.

    Tangents are central differences of the unprojected points along x (columns) and y (rows); the normal is
    their cross product tu × tv, which faces the camera as (0, 0, 1)-ish for a fronto-parallel surface.
    The one-pixel border has no central difference and gets (0, 0, 1). Normalised with +1e-7 in the norm.
    """
    b, h, w = depth.shape
    points = depth_to_points(depth, fov)
    tu = points[:, 1:-1, 2:] - points[:, 1:-1, :-2]
    tv = points[:, 2:, 1:-1] - points[:, :-2, 1:-1]
    inner = torch.linalg.cross(tu, tv, dim=-1)
    normal = depth.new_zeros(b, h, w, 3)
    normal[..., 2] = 1.0
    normal = torch.cat([normal[:, :1], torch.cat([normal[:, 1:-1, :1], inner, normal[:, 1:-1, -1:]], dim=2),
                        normal[:, -1:]], dim=1)
    return normal / (normal.pow(2).sum(-1, keepdim=True).sqrt() + EPS)


def light_parameters(raw: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """netL's 4 outputs in [-1, 1] -> ambient (B,1), diffuse (B,1) in [0, 1] and unit direction (B,3) with z > 0."""
    ambient = raw[:, :1] / 2 + 0.5
    diffuse = raw[:, 1:2] / 2 + 0.5
    direction = torch.cat([raw[:, 2:4], torch.ones_like(raw[:, :1])], dim=1)
    return ambient, diffuse, direction / direction.pow(2).sum(1, keepdim=True).sqrt()


def diffuse_shading(normal: Tensor, direction: Tensor) -> Tensor:
    """max(0, n·l) as (B, 1, H, W) from normals (B, H, W, 3) and light directions (B, 3)."""
    return (normal * direction.view(-1, 1, 1, 3)).sum(-1).clamp(min=0).unsqueeze(1)


# ----------------------------------------------------------------------------------------------------------------
# The demo's maps


def prepare_input(images: Tensor, image_size: int = IMAGE_SIZE) -> Tensor:
    """Bilinear resize to the networks' 64 px as the demo does (through 128 px first when both sides exceed 256)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected (N, 3, H, W) images, got {tuple(images.shape)}")
    h, w = images.shape[-2:]
    if h > image_size * 4 and w > image_size * 4:
        images = F.interpolate(images, (image_size * 2, image_size * 2), mode="bilinear", align_corners=False)
    if images.shape[-2:] != (image_size, image_size):
        images = F.interpolate(images, (image_size, image_size), mode="bilinear", align_corners=False)
    return images


def canonical_depth(raw: Tensor, border_depth: float = DEMO_BORDER_DEPTH) -> Tensor:
    """netD output (B, 1, H, W) -> depth (B, H, W) in [0.9, 1.1]: mean-centred, tanh, rescaled, 2-column borders."""
    depth = raw.squeeze(1)
    depth = (depth - depth.flatten(1).mean(1).view(-1, 1, 1)).tanh()
    depth = (1 + depth) / 2 * MAX_DEPTH + (1 - depth) / 2 * MIN_DEPTH
    border = torch.zeros_like(depth[:1])
    border[..., :2] = 1
    border[..., -2:] = 1
    return depth * (1 - border) + border * border_depth


def _resize(x: Tensor, size: int) -> Tensor:
    return x if x.shape[-1] == size and x.shape[-2] == size else F.interpolate(
        x, (size, size), mode="bilinear", align_corners=False)


@torch.no_grad()
def canonical_maps(nets: object, images: Tensor, size: int = 128, border_depth: float = DEMO_BORDER_DEPTH
                   ) -> dict[str, Tensor]:
    """The six maps of SD-GAN's Unsup3d demo for a batch of aligned faces (float (N,3,H,W) in [-1, 1]).

    `nets` has netD, netA, netL (an Unsup3dNets, or anything with those attributes or keys). Returns, all
    (N, C, size, size): input (3, [-1,1]), depth (1, depth units in [0.9, 1.1]), normal (3, unit vectors),
    shading (1, max(0, n·l) in [0, 1]), albedo (3, [-1,1]), image (3, unclamped; the demo clamps on export);
    plus input64 (the networks' (N,3,64,64) input) and light (N, 4: ambient, diffuse, direction x, y raw).
    """
    get = (lambda name: nets[name]) if isinstance(nets, Mapping) else (lambda name: getattr(nets, name))
    net_d, net_a, net_l = get("netD"), get("netA"), get("netL")
    device = next(net_d.parameters()).device
    x = prepare_input(images.to(device=device, dtype=torch.float32))
    depth = canonical_depth(net_d(x), border_depth)
    albedo = net_a(x)
    light = net_l(x)
    ambient, diffuse, direction = light_parameters(light)
    normal = normal_from_depth(depth)
    shading = diffuse_shading(normal, direction)
    image = (albedo / 2 + 0.5) * (ambient.view(-1, 1, 1, 1) + diffuse.view(-1, 1, 1, 1) * shading) * 2 - 1
    normal_up = _resize(normal.permute(0, 3, 1, 2), size)
    normal_up = normal_up / normal_up.pow(2).sum(1, keepdim=True).sqrt().clamp_min(1e-12)
    return {"input": _resize(x, size), "depth": _resize(depth.unsqueeze(1), size), "normal": normal_up,
            "shading": _resize(shading, size), "albedo": _resize(albedo, size), "image": _resize(image, size),
            "input64": x, "light": light}


def scaled_map(maps: Mapping[str, Tensor], name: str, scaling: str = "signed") -> Tensor:
    """One map as 3 channels: 'signed' puts every map in [-1, 1], 'unit' in [0, 1] (the demo's export values).

    One-channel maps (depth, shading) are repeated to 3 channels as the demo exports them; depth is first
    mapped (d − 0.9)/0.2 to [0, 1]; the canonical image is clamped to [-1, 1] as on export.
    """
    if scaling not in SCALINGS:
        raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
    if name not in MAP_NAMES:
        raise ValueError(f"unknown map {name!r}; expected one of {MAP_NAMES}")
    value = maps[name]
    if name == "depth":
        unit = ((value - MIN_DEPTH) / (MAX_DEPTH - MIN_DEPTH)).clamp(0, 1)
    elif name == "shading":
        unit = value.clamp(0, 1)
    else:  # input, normal, albedo, image live in [-1, 1]
        unit = value.clamp(-1, 1) / 2 + 0.5
    unit = unit.expand(-1, 3, -1, -1) if unit.shape[1] == 1 else unit
    return unit if scaling == "unit" else unit * 2 - 1


def fusion_input(maps: Mapping[str, Tensor], channels: Sequence[str] = DEFAULT_FUSION_CHANNELS,
                 scaling: str = "signed") -> Tensor:
    """The fusion network's canonical-map input: three maps x 3 channels = (N, 9, S, S), in the order given."""
    if len(channels) != 3:
        raise ValueError(f"the fusion network takes 9 channels: give three maps, got {list(channels)}")
    return torch.cat([scaled_map(maps, name, scaling) for name in channels], dim=1).contiguous()


def demo_arrays(maps: Mapping[str, Tensor], bgr: bool = False) -> list[dict[str, np.ndarray]]:
    """Per image, the demo's `out_results()` arrays (keys as DEMO_NAMES), truncated to integers like np.uint8(x).

    input_image 64x64x3 uint8; canonical_depth SxSx3 uint16 ((d − 0.9)/0.2 · 65535); the others SxSx3 uint8
    (normal n/2 + 0.5, shading max(0, n·l), albedo a/2 + 0.5, image clamp(−1, 1)/2 + 0.5). RGB order unless
    `bgr` (the official arrays are BGR views with negative strides; ours are always contiguous). Values are
    clipped to the integer range before truncation, so a float just below 0 cannot wrap around.
    """
    units = {"input": maps["input64"].clamp(-1, 1) / 2 + 0.5}
    units.update({name: scaled_map(maps, name, "unit") for name in MAP_NAMES if name != "input"})
    out: list[dict[str, np.ndarray]] = []
    for index in range(maps["input64"].shape[0]):
        arrays: dict[str, np.ndarray] = {}
        for name, unit in units.items():
            array = unit[index].detach().cpu().permute(1, 2, 0).float().numpy()  # float32 like the demo
            scale, dtype = (65535.0, np.uint16) if name == "depth" else (255.0, np.uint8)
            array = np.clip(array * scale, 0, scale).astype(dtype)  # astype truncates toward zero
            arrays[DEMO_NAMES[name]] = np.ascontiguousarray(array[:, :, ::-1] if bgr else array)
        out.append(arrays)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Unaligned photos: the demo's crop around a detected face


def crop_window(box: Sequence[float]) -> tuple[int, int, int]:
    """(top, left, side) in source pixels of the demo's square crop around box (x0, y0, x1, y1).

    half = int(((y1 − y0) + (x1 − x0)) / 4 · 1.1); the square of side 2·half is centred on the box and moved
    down by 0.15·half; indices are truncated with int() as in the demo (after its padding offset of half).
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"empty face box {tuple(box)}")
    hc, wc = (y0 + y1) / 2, (x0 + x1) / 2
    half = int(((y1 - y0) + (x1 - x0)) / 2 / 2 * 1.1)
    top_padded = int(hc - half + half + half * 0.15)  # in the padded image, exactly as the demo writes it
    left_padded = int(wc - half + half)
    return top_padded - half, left_padded - half, 2 * half


def demo_crop(image: np.ndarray, box: Sequence[float], size: int | None = IMAGE_SIZE) -> np.ndarray | Tensor:
    """The demo's face crop of an RGB uint8 (H, W, 3) photo: edge-padded square window (crop_window).

    With `size` (64), returns the networks' input (1, 3, size, size) float in [-1, 1], resized as the demo
    does (prepare_input); with size=None the uint8 crop itself.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got {image.shape}")
    top, left, side = crop_window(box)
    half = side // 2
    padded = np.pad(image, ((half, half), (half, half), (0, 0)), mode="edge")
    crop = padded[top + half: top + half + side, left + half: left + half + side]
    if size is None:
        return np.ascontiguousarray(crop)
    tensor = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1).unsqueeze(0).float() / 255.0
    return prepare_input(tensor * 2 - 1, size)


def largest_face_box(image: np.ndarray, detector: object | None = None) -> tuple[float, float, float, float] | None:
    """Box of the largest detected face (the demo's MTCNN uses select_largest=True), or None when none is found.

    `detector` is an alignment.detect.Detector; RetinaFace (the project default) when omitted.
    """
    if detector is None:
        from alignment.detect import make_detector

        detector = make_detector("retinaface")
    detections = detector.detect(image)
    if not detections:
        return None
    best = max(detections, key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))
    return tuple(float(v) for v in best.box)


def photo_maps(nets: nn.Module | object, photo: np.ndarray, size: int = 128, detector: object | None = None
               ) -> dict[str, Tensor] | None:
    """canonical_maps of an unaligned RGB uint8 photo: detect, crop as the demo, run; None without a face."""
    box = largest_face_box(photo, detector)
    if box is None:
        return None
    return canonical_maps(nets, demo_crop(photo, box), size=size)


__all__ = ["DEFAULT_FUSION_CHANNELS", "DEMO_NAMES", "MAP_NAMES", "canonical_depth", "canonical_maps", "crop_window",
           "demo_arrays", "demo_crop", "depth_to_points", "diffuse_shading", "fusion_input", "intrinsics",
           "largest_face_box", "light_parameters", "normal_from_depth", "photo_maps", "prepare_input", "scaled_map"]
