"""Adaptive Discriminator Augmentation (ADA, Karras et al. 2020), the "bgc" pipeline, in plain PyTorch.

Every image the discriminator sees (reals and fakes alike) goes through `AdaptiveAugment`, so D never sees the
un-augmented distribution and the augmentations do not leak into G. The strength `p` is tuned on the fly from
the overfitting heuristic r_t = E[sign(D(real))]: above `target` D is overfitting, so p rises.

Pipeline (each transform enabled per sample with probability p times its multiplier):
  geometric: xflip, rotate90, integer translation, isotropic scale, arbitrary rotation (split into a pre- and a
  post-rotation around the anisotropic scale, each with probability 1 - sqrt(1 - p)), anisotropic scale,
  fractional translation; all composed into one 3x3 homogeneous matrix per sample (output pixel -> input pixel).
  colour: brightness, contrast, luma flip, hue rotation, saturation; one 4x4 matrix per sample acting on RGB.

Differences from NVlabs' stylegan2-ada-pytorch `AugmentPipe`, kept deliberately simple:
  * the geometric warp is a single bilinear `grid_sample` at the native resolution with `padding_mode=
    "reflection"` (mirror about the pixel edge, so the border pixel repeats). NVlabs pads with reflect mode
    (no repeat), upsamples 2x with a sym6 wavelet filter, samples, then filters and downsamples: less aliasing
    under rotation/scale. Ours is a little softer and aliases a little more, but needs no custom ops.
  * samples whose matrix is the identity pass through untouched, and samples whose matrix is a pure pixel blit
    (flips, 90 degree turns, integer shifts) are copied pixel for pixel with a gather: both bit-exact.
  * no image-space filtering, noise or cutout (not part of "bgc").
Everything is differentiable w.r.t. the images, so the generator gets gradients through augmented fakes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_GEOMETRIC = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac")
_COLOUR = ("brightness", "contrast", "lumaflip", "hue", "saturation")


def _mat3(rows: list[list[torch.Tensor | float]], n: int, device: torch.device) -> torch.Tensor:
    """Stack per-sample 3x3 (or 4x4) matrices from rows of scalars or [N] tensors."""
    cells = [torch.as_tensor(c, dtype=torch.float32, device=device).expand(n) for row in rows for c in row]
    size = len(rows)
    return torch.stack(cells, dim=1).view(n, size, size)


def _translate2(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    return _mat3([[1, 0, tx], [0, 1, ty], [0, 0, 1]], tx.shape[0], tx.device)


def _scale2(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    return _mat3([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], sx.shape[0], sx.device)


def _rotate2(theta: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(theta), torch.sin(theta)
    return _mat3([[c, -s, 0], [s, c, 0], [0, 0, 1]], theta.shape[0], theta.device)


def _rotate3_about(axis: tuple[float, float, float], theta: torch.Tensor) -> torch.Tensor:
    """Rodrigues rotation of RGB around a unit axis, as [N, 4, 4] homogeneous matrices."""
    n = theta.shape[0]
    x, y, z = axis
    c, s = torch.cos(theta), torch.sin(theta)
    cc = 1 - c
    return _mat3([[x * x * cc + c, x * y * cc - z * s, x * z * cc + y * s, 0],
                  [y * x * cc + z * s, y * y * cc + c, y * z * cc - x * s, 0],
                  [z * x * cc - y * s, z * y * cc + x * s, z * z * cc + c, 0],
                  [0, 0, 0, 1]], n, theta.device)


def _reflect_index(index: torch.Tensor, size: int) -> torch.Tensor:
    """Mirror integer indices into [0, size) about the pixel edges (as grid_sample's "reflection" padding)."""
    period = index.remainder(2 * size)
    return torch.where(period >= size, 2 * size - 1 - period, period)


def _gather_pixels(images: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Nearest-pixel lookup of a normalised sampling grid [N, H, W, 2] (differentiable w.r.t. images)."""
    n, channels, h, w = images.shape
    ix = _reflect_index(torch.round((grid[..., 0] + 1) * (w / 2) - 0.5).long(), w)
    iy = _reflect_index(torch.round((grid[..., 1] + 1) * (h / 2) - 0.5).long(), h)
    index = (iy * w + ix).view(n, 1, h * w).expand(n, channels, h * w)
    return images.reshape(n, channels, h * w).gather(2, index).view(n, channels, h, w)


class AdaptiveAugment(torch.nn.Module):
    """ADA "bgc" augmentation with its own strength controller; `p` and the r_t accumulator live in state_dict."""

    def __init__(self, p: float = 0.0, target: float = 0.6, adjust_kimg: float = 500.0,
                 xflip: float = 1, rotate90: float = 1, xint: float = 1, scale: float = 1, rotate: float = 1,
                 aniso: float = 1, xfrac: float = 1, brightness: float = 1, contrast: float = 1, lumaflip: float = 1,
                 hue: float = 1, saturation: float = 1) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.target = float(target)
        self.adjust_kimg = float(adjust_kimg)
        # Probability multipliers, one per transform (0 disables it entirely).
        self.xflip, self.rotate90, self.xint = float(xflip), float(rotate90), float(xint)
        self.scale, self.rotate, self.aniso, self.xfrac = float(scale), float(rotate), float(aniso), float(xfrac)
        self.brightness, self.contrast, self.lumaflip = float(brightness), float(contrast), float(lumaflip)
        self.hue, self.saturation = float(hue), float(saturation)
        # Ranges (NVlabs defaults).
        self.xint_max, self.scale_std, self.rotate_max, self.aniso_std, self.xfrac_std = 0.125, 0.2, 1.0, 0.2, 0.125
        self.brightness_std, self.contrast_std, self.hue_max, self.saturation_std = 0.2, 0.5, 1.0, 1.0
        self.register_buffer("p", torch.tensor(float(p), dtype=torch.float64))
        self.register_buffer("sign_sum", torch.zeros((), dtype=torch.float64))
        self.register_buffer("sign_count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("last_rt", torch.tensor(float("nan"), dtype=torch.float64))
        # Host copy of p so forward never syncs with the device; refreshed on load_state_dict.
        self._p_host = float(p)
        self.register_load_state_dict_post_hook(lambda module, _keys: module._sync_p_host())

    def _sync_p_host(self) -> None:
        self._p_host = float(self.p)

    # ------------------------------------------------------------------ strength control
    @property
    def rt(self) -> float:
        """The r_t used by the last `adjust` (NaN before the first)."""
        return float(self.last_rt)

    def set_p(self, p: float) -> None:
        """Force the strength (e.g. a fixed-p run)."""
        self.p.fill_(min(max(float(p), 0.0), 1.0))
        self._sync_p_host()

    @torch.no_grad()
    def accumulate(self, real_logits: torch.Tensor) -> None:
        """Collect sign(D(real)) for the next `adjust`; stays on the device (no sync)."""
        logits = real_logits.detach()
        self.sign_sum += logits.sign().sum().to(self.sign_sum.device, torch.float64)
        self.sign_count += logits.numel()

    @torch.no_grad()
    def adjust(self, n_images_since_last: int | None = None, world_size: int = 1) -> float:
        """Apply p += sign(r_t - target) * n / (adjust_kimg * 1000), clamp to [0, 1], reset the accumulator.

        `n_images_since_last` is the number of real images this rank showed D since the last adjust; the step uses
        it times `world_size`. If None, the (all-ranks) number of accumulated logits is used instead. Under
        torch.distributed the sign sum and count are all-reduced first, so every rank computes the same p.
        """
        stats = torch.stack([self.sign_sum, self.sign_count])
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            if torch.distributed.get_backend() == "nccl" and not stats.is_cuda:
                stats = stats.cuda()  # NCCL only reduces CUDA tensors; the module may have been left on the CPU
            torch.distributed.all_reduce(stats)
        total, count = (float(v) for v in stats)
        self.sign_sum.zero_()
        self.sign_count.zero_()
        if count <= 0:
            return self._p_host
        rt = total / count
        n = count if n_images_since_last is None else float(n_images_since_last) * world_size
        step = math.copysign(1.0, rt - self.target) if rt != self.target else 0.0
        self.last_rt.fill_(rt)
        self.set_p(self._p_host + step * n / (self.adjust_kimg * 1000.0))
        return self._p_host

    # ------------------------------------------------------------------ augmentation
    def _enabled(self, multiplier: float, shape: list[int], device: torch.device,
                 generator: torch.Generator | None) -> torch.Tensor:
        return torch.rand(shape, device=device, generator=generator) < multiplier * self._p_host

    def _geometric(self, n: int, h: int, w: int, device: torch.device,
                   gen: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Inverse transform G (output pixel -> input pixel, pixel units, origin at the image centre) and a mask
        of the samples that use a non-blit (interpolating) transform."""
        g = torch.eye(3, device=device).expand(n, 3, 3)
        general = torch.zeros(n, dtype=torch.bool, device=device)
        one, zero = torch.ones(n, device=device), torch.zeros(n, device=device)

        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(shape, device=device, generator=gen)

        def randn(*shape: int) -> torch.Tensor:
            return torch.randn(shape, device=device, generator=gen)

        if self.xflip > 0:
            flip = torch.where(self._enabled(self.xflip, [n], device, gen), torch.floor(rand(n) * 2), zero)
            g = g @ _scale2(1 - 2 * flip, one)
        if self.rotate90 > 0:
            quarter = torch.where(self._enabled(self.rotate90, [n], device, gen), torch.floor(rand(n) * 4), zero)
            # Snap cos/sin of k*90 degrees to exact 0/+-1 so the blit stays exact.
            g = g @ torch.round(_rotate2(quarter * (math.pi / 2)))
        if self.xint > 0:
            t = (rand(n, 2) * 2 - 1) * self.xint_max
            t = torch.where(self._enabled(self.xint, [n, 1], device, gen), t, torch.zeros_like(t))
            g = g @ _translate2(-torch.round(t[:, 0] * w), -torch.round(t[:, 1] * h))
        if self.scale > 0:
            on = self._enabled(self.scale, [n], device, gen)
            s = torch.where(on, torch.exp2(randn(n) * self.scale_std), one)
            g, general = g @ _scale2(1 / s, 1 / s), general | on
        # Pre- and post-rotation each with p_rot so that P(any rotation) = rotate * p.
        p_rot = 1 - math.sqrt(min(max(1 - self.rotate * self._p_host, 0.0), 1.0))

        def random_rotation() -> tuple[torch.Tensor, torch.Tensor]:
            on = rand(n) < p_rot
            return _rotate2(torch.where(on, (rand(n) * 2 - 1) * math.pi * self.rotate_max, zero)), on

        if self.rotate > 0:
            rotation, on = random_rotation()
            g, general = g @ rotation, general | on
        if self.aniso > 0:
            on = self._enabled(self.aniso, [n], device, gen)
            s = torch.where(on, torch.exp2(randn(n) * self.aniso_std), one)
            g, general = g @ _scale2(1 / s, s), general | on
        if self.rotate > 0:
            rotation, on = random_rotation()
            g, general = g @ rotation, general | on
        if self.xfrac > 0:
            on = self._enabled(self.xfrac, [n], device, gen)
            t = torch.where(on[:, None], randn(n, 2) * self.xfrac_std, torch.zeros(n, 2, device=device))
            g, general = g @ _translate2(-t[:, 0] * w, -t[:, 1] * h), general | on
        return g, general

    def _colour(self, n: int, channels: int, device: torch.device, gen: torch.Generator | None) -> torch.Tensor:
        """Per-sample 4x4 colour matrix C: C @ [r, g, b, 1] -> augmented colour (values in [-1, 1] space)."""
        c_mat = torch.eye(4, device=device).expand(n, 4, 4)
        one, zero = torch.ones(n, device=device), torch.zeros(n, device=device)
        luma = torch.tensor([1.0, 1.0, 1.0, 0.0], device=device) / math.sqrt(3)
        luma_outer = torch.outer(luma, luma)
        eye4 = torch.eye(4, device=device)
        if self.brightness > 0:
            b = torch.where(self._enabled(self.brightness, [n], device, gen),
                            torch.randn(n, device=device, generator=gen) * self.brightness_std, zero)
            c_mat = _mat3([[1, 0, 0, b], [0, 1, 0, b], [0, 0, 1, b], [0, 0, 0, 1]], n, device) @ c_mat
        if self.contrast > 0:
            c = torch.where(self._enabled(self.contrast, [n], device, gen),
                            torch.exp2(torch.randn(n, device=device, generator=gen) * self.contrast_std), one)
            c_mat = _mat3([[c, 0, 0, 0], [0, c, 0, 0], [0, 0, c, 0], [0, 0, 0, 1]], n, device) @ c_mat
        if self.lumaflip > 0:
            i = torch.where(self._enabled(self.lumaflip, [n], device, gen),
                            torch.floor(torch.rand(n, device=device, generator=gen) * 2), zero)
            c_mat = (eye4 - 2 * luma_outer * i[:, None, None]) @ c_mat  # Householder reflection along luma
        if self.hue > 0 and channels > 1:
            theta = torch.where(self._enabled(self.hue, [n], device, gen),
                                (torch.rand(n, device=device, generator=gen) * 2 - 1) * math.pi * self.hue_max, zero)
            c_mat = _rotate3_about((1 / math.sqrt(3),) * 3, theta) @ c_mat
        if self.saturation > 0 and channels > 1:
            s = torch.where(self._enabled(self.saturation, [n], device, gen),
                            torch.exp2(torch.randn(n, device=device, generator=gen) * self.saturation_std), one)
            c_mat = (luma_outer + (eye4 - luma_outer) * s[:, None, None]) @ c_mat
        return c_mat

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment a [N, C, H, W] batch in [-1, 1] (C = 1 or 3 for colour transforms); identity when p == 0."""
        if images.ndim != 4:
            raise ValueError(f"expected NCHW images, got shape {tuple(images.shape)}")
        if self._p_host <= 0.0:
            return images
        n, channels, h, w = images.shape
        device, dtype = images.device, images.dtype
        out = images

        if any(getattr(self, name) > 0 for name in _GEOMETRIC):
            g, general = self._geometric(n, h, w, device, generator)
            identity = (g == torch.eye(3, device=device)).flatten(1).all(dim=1)
            # Pixel units -> grid_sample's normalised coordinates (align_corners=False: +-1 at the outer edges).
            to_norm = torch.diag(torch.tensor([2.0 / w, 2.0 / h, 1.0], device=device))
            from_norm = torch.diag(torch.tensor([w / 2.0, h / 2.0, 1.0], device=device))
            theta = (to_norm @ g @ from_norm)[:, :2, :].to(dtype)
            grid = F.affine_grid(theta, [n, channels, h, w], align_corners=False)
            warped = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
            # Blit-only samples (flips, quarter turns, integer shifts) land on pixel centres: copy those pixels
            # with a gather instead, so they are bit-exact rather than bilinear with rounding noise.
            blitted = _gather_pixels(images, grid)
            warped = torch.where(general[:, None, None, None], warped, blitted)
            out = torch.where(identity[:, None, None, None], images, warped)

        if any(getattr(self, name) > 0 for name in _COLOUR):
            c_mat = self._colour(n, channels, device, generator).to(dtype)
            flat = out.reshape(n, channels, h * w)
            if channels == 3:
                flat = c_mat[:, :3, :3] @ flat + c_mat[:, :3, 3:]
            elif channels == 1:
                # Grayscale: average the RGB rows, i.e. apply the transform to a gray (r = g = b) pixel.
                rows = c_mat[:, :3, :].mean(dim=1, keepdim=True)
                flat = flat * rows[:, :, :3].sum(dim=2, keepdim=True) + rows[:, :, 3:]
            else:
                raise ValueError(f"colour augmentation needs 1 or 3 channels, got {channels}")
            out = flat.reshape(n, channels, h, w)
        return out

    def extra_repr(self) -> str:
        return f"p={self._p_host:.4f}, target={self.target}, adjust_kimg={self.adjust_kimg}"
