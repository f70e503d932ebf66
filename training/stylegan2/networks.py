"""StyleGAN2 config-f Generator and Discriminator, loadable strictly from rosinality checkpoints.

The constructors, state-dict keys and the generator's calling convention are those of
rosinality/stylegan2-pytorch (what SD-GAN and its peers load). Two keyword-only additions, `channel_max` and
`channel_base`, shrink the networks for demos and tests; their defaults give the public channel table.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch
from torch import nn

from training.stylegan2.layers import ConstantInput, ConvLayer, EqualLinear, PixelNorm, ResBlock, StyledConv, ToRGB

RESOLUTIONS = (4, 8, 16, 32, 64, 128, 256, 512, 1024)


def channel_table(channel_multiplier: int = 2, channel_max: int | None = None,
                  channel_base: int = 16384) -> dict[int, int]:
    """Channels per resolution.

    Defaults give the public table: 512 up to 32 px, then channel_base * multiplier / res (64 px: 256 *
    multiplier, ..., 1024 px: 16 * multiplier). An explicit `channel_max` replaces the 512 and caps every
    resolution, which is how demo and test models stay small.
    """
    low = 512 if channel_max is None else channel_max
    table = {}
    for res in RESOLUTIONS:
        scaled = low if res <= 32 else channel_base * channel_multiplier // res
        table[res] = max(1, scaled if channel_max is None else min(channel_max, scaled))
    return table


def _log2_size(size: int) -> int:
    log_size = int(math.log2(size)) if size > 0 else 0
    if size not in RESOLUTIONS[1:] or 2**log_size != size:
        raise ValueError(f"size must be a power of two between 8 and 1024, got {size}")
    return log_size


class Generator(nn.Module):
    """Mapping network (PixelNorm + n_mlp EqualLinear) and skip-architecture synthesis network."""

    def __init__(self, size: int, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: int = 2,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1), lr_mlp: float = 0.01, *, channel_max: int | None = None,
                 channel_base: int = 16384):
        super().__init__()
        self.size = size
        self.style_dim = style_dim
        self.log_size = _log2_size(size)
        self.channels = channel_table(channel_multiplier, channel_max, channel_base)
        mapping: list[nn.Module] = [PixelNorm()]
        mapping += [EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation="fused_lrelu") for _ in range(n_mlp)]
        self.style = nn.Sequential(*mapping)

        self.input = ConstantInput(self.channels[4])
        self.conv1 = StyledConv(self.channels[4], self.channels[4], 3, style_dim, blur_kernel=blur_kernel)
        self.to_rgb1 = ToRGB(self.channels[4], style_dim, upsample=False)

        self.num_layers = (self.log_size - 2) * 2 + 1
        self.convs = nn.ModuleList()
        self.upsamples = nn.ModuleList()  # empty, kept so the module tree matches the reference
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for layer in range(self.num_layers):
            res = (layer + 5) // 2
            self.noises.register_buffer(f"noise_{layer}", torch.randn(1, 1, 2**res, 2**res))
        in_channels = self.channels[4]
        for log_res in range(3, self.log_size + 1):
            out_channels = self.channels[2**log_res]
            self.convs.append(StyledConv(in_channels, out_channels, 3, style_dim, upsample=True,
                                         blur_kernel=blur_kernel))
            self.convs.append(StyledConv(out_channels, out_channels, 3, style_dim, blur_kernel=blur_kernel))
            self.to_rgbs.append(ToRGB(out_channels, style_dim, blur_kernel=blur_kernel))
            in_channels = out_channels
        self.n_latent = self.log_size * 2 - 2

    def _randn(self, *shape: int, generator: torch.Generator | None) -> torch.Tensor:
        """Normal samples on the model's device; with a (CPU) generator, drawn from it, so seeded draws are
        the same on every device and leave the global RNG alone."""
        device = self.input.input.device
        if generator is None:
            return torch.randn(*shape, device=device)
        return torch.randn(*shape, generator=generator).to(device)

    def make_noise(self, *, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """One fresh noise map per synthesis layer, batch 1 (broadcast over the batch)."""
        return [self._randn(1, 1, 2 ** ((layer + 5) // 2), 2 ** ((layer + 5) // 2), generator=generator)
                for layer in range(self.num_layers)]

    @torch.no_grad()
    def mean_latent(self, n_latent: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Average W of n random z: the truncation centre, shape (1, style_dim)."""
        return self.style(self._randn(n_latent, self.style_dim, generator=generator)).mean(0, keepdim=True)

    def get_latent(self, z: torch.Tensor) -> torch.Tensor:
        return self.style(z)

    def _broadcast_latent(self, styles: list[torch.Tensor], inject_index: int | None) -> torch.Tensor:
        """(batch, n_latent, style_dim) W+: one style everywhere, or two mixed at inject_index."""
        if len(styles) < 2:
            style = styles[0]
            return style if style.ndim >= 3 else style.unsqueeze(1).expand(-1, self.n_latent, -1)
        if inject_index is None:
            inject_index = random.randint(1, self.n_latent - 1)
        first = styles[0].unsqueeze(1).expand(-1, inject_index, -1)
        second = styles[1].unsqueeze(1).expand(-1, self.n_latent - inject_index, -1)
        return torch.cat([first, second], dim=1)

    def forward(self, styles: list[torch.Tensor], return_latents: bool = False, inject_index: int | None = None,
                truncation: float = 1, truncation_latent: torch.Tensor | None = None, input_is_latent: bool = False,
                noise: list[torch.Tensor | None] | None = None,
                randomize_noise: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """styles: list of z (or W when input_is_latent) -> (image in about [-1, 1], W+ latent or None)."""
        if not isinstance(styles, (list, tuple)):
            raise TypeError("styles must be a list of tensors, e.g. g([z]) (the reference calling convention)")
        if not input_is_latent:
            styles = [self.style(s) for s in styles]
        if noise is None:
            noise = ([None] * self.num_layers if randomize_noise
                     else [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)])
        if truncation < 1:
            if truncation_latent is None:
                raise ValueError("truncation < 1 needs truncation_latent (e.g. g.mean_latent(4096))")
            styles = [truncation_latent + truncation * (s - truncation_latent) for s in styles]
        latent = self._broadcast_latent(list(styles), inject_index)

        out = self.conv1(self.input(latent), latent[:, 0], noise=noise[0])
        skip = self.to_rgb1(out, latent[:, 1])
        index = 1
        for block in range(len(self.to_rgbs)):
            out = self.convs[2 * block](out, latent[:, index], noise=noise[2 * block + 1])
            out = self.convs[2 * block + 1](out, latent[:, index + 1], noise=noise[2 * block + 2])
            skip = self.to_rgbs[block](out, latent[:, index + 2], skip)
            index += 2
        return (skip, latent) if return_latents else (skip, None)


class Discriminator(nn.Module):
    """ResNet discriminator with minibatch standard deviation, as in StyleGAN2 config-f."""

    def __init__(self, size: int, channel_multiplier: int = 2, blur_kernel: Sequence[float] = (1, 3, 3, 1), *,
                 channel_max: int | None = None, channel_base: int = 16384, stddev_group: int = 4):
        super().__init__()
        log_size = _log2_size(size)
        channels = channel_table(channel_multiplier, channel_max, channel_base)
        convs: list[nn.Module] = [ConvLayer(3, channels[size], 1)]
        in_channels = channels[size]
        for log_res in range(log_size, 2, -1):
            out_channels = channels[2 ** (log_res - 1)]
            convs.append(ResBlock(in_channels, out_channels, blur_kernel))
            in_channels = out_channels
        self.convs = nn.Sequential(*convs)
        self.stddev_group = stddev_group
        self.stddev_feat = 1
        self.final_conv = ConvLayer(in_channels + 1, channels[4], 3)
        self.final_linear = nn.Sequential(
            EqualLinear(channels[4] * 4 * 4, channels[4], activation="fused_lrelu"),
            EqualLinear(channels[4], 1),
        )

    def _stddev_group(self, batch: int) -> int:
        """min(batch, stddev_group) as in the reference; if that does not divide the batch (where the
        reference fails), the largest divisor of the batch below it."""
        group = min(batch, self.stddev_group)
        while batch % group:
            group -= 1
        return group

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.convs(images)
        batch, channel, height, width = out.shape
        group = self._stddev_group(batch)
        stats = out.view(group, -1, self.stddev_feat, channel // self.stddev_feat, height, width)
        stats = torch.sqrt(stats.var(0, unbiased=False) + 1e-8).mean(dim=(2, 3, 4), keepdim=True).squeeze(2)
        stats = stats.repeat(group, 1, height, width)
        out = self.final_conv(torch.cat([out, stats], dim=1))
        return self.final_linear(out.view(batch, -1))
