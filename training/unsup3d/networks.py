"""Unsup3d's four networks (elliottwu/unsup3d `unsup3d/networks.py`), rebuilt so official checkpoints load as-is.

Every network keeps its layers in an `nn.Sequential` named `network` (ConfNet adds `out_net1` / `out_net2`),
with parameter-free layers (ReLU, LeakyReLU, Upsample, Tanh, Softplus) at the same positions as the official
code, so state-dict keys such as `network.4.weight` (a GroupNorm) and shapes match and an official state dict
loads with `strict=True`. Outputs equal the official ones (tests/fixtures/unsup3d/parity.pt).

Normalisation is GroupNorm only (never batch or instance norm), so the PyTorch 2.13 CPU bug in batch/instance
norm backward at batch size 1 with non-contiguous gradients does not apply (tests/training/unsup3d checks the
GroupNorm gradients against float64 at batch size 1).

`celeba_networks()` is the CelebA (and SD-GAN) configuration; `infer_config(states)` reads nf / zdim / channel
counts back from a state dict, so other configurations load too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from torch import Tensor, nn

Activation = Callable[[], nn.Module] | None


def _down(cin: int, cout: int, groups: int | None, leaky: bool = True) -> list[nn.Module]:
    """4x4 stride-2 conv (halves the size), optional GroupNorm, then LeakyReLU(0.2) or ReLU."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel_size=4, stride=2, padding=1, bias=False)]
    if groups is not None:
        layers.append(nn.GroupNorm(groups, cout))
    layers.append(nn.LeakyReLU(0.2) if leaky else nn.ReLU())
    return layers


def _conv_norm_relu(conv: nn.Module, groups: int | None, channels: int) -> list[nn.Module]:
    """A conv (or deconv) followed by an optional GroupNorm and ReLU."""
    layers = [conv]
    if groups is not None:
        layers.append(nn.GroupNorm(groups, channels))
    layers.append(nn.ReLU())
    return layers


def _deconv(cin: int, cout: int) -> nn.ConvTranspose2d:
    """4x4 stride-2 transposed conv: doubles the size."""
    return nn.ConvTranspose2d(cin, cout, kernel_size=4, stride=2, padding=1, bias=False)


def _conv(cin: int, cout: int, k: int) -> nn.Conv2d:
    """Size-preserving kxk conv without bias (Unsup3d uses no biases anywhere)."""
    return nn.Conv2d(cin, cout, kernel_size=k, stride=1, padding=k // 2, bias=False)


def _bottleneck_encoder(cin: int, zdim: int, nf: int) -> list[nn.Module]:
    """64x64 -> 1x1 code of EDDeconv and ConfNet: three normalised downsamplings, one plain, a 4x4 valid conv."""
    return [*_down(cin, nf, 16), *_down(nf, nf * 2, 32), *_down(nf * 2, nf * 4, 64), *_down(nf * 4, nf * 8, None),
            nn.Conv2d(nf * 8, zdim, kernel_size=4, stride=1, padding=0, bias=False), nn.ReLU()]


class Encoder(nn.Module):
    """Image (3x64x64) -> vector of `cout` (netL: 4 light parameters, netV: 6 viewpoint parameters), in [-1, 1]."""

    def __init__(self, cin: int, cout: int, nf: int = 64, activation: Activation = nn.Tanh) -> None:
        super().__init__()
        widths = [cin, nf, nf * 2, nf * 4, nf * 8]
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Conv2d(a, b, kernel_size=4, stride=2, padding=1, bias=False), nn.ReLU()]
        layers += [nn.Conv2d(nf * 8, nf * 8, kernel_size=4, stride=1, padding=0, bias=False), nn.ReLU(),
                   nn.Conv2d(nf * 8, cout, kernel_size=1, stride=1, padding=0, bias=False)]
        if activation is not None:
            layers.append(activation())
        self.network = nn.Sequential(*layers)

    def forward(self, image: Tensor) -> Tensor:
        return self.network(image).reshape(image.shape[0], -1)


class EDDeconv(nn.Module):
    """Encoder-decoder, image (3x64x64) -> map (cout x64x64): netD (depth, no activation), netA (albedo, tanh)."""

    def __init__(self, cin: int, cout: int, zdim: int = 128, nf: int = 64, activation: Activation = nn.Tanh) -> None:
        super().__init__()
        layers = _bottleneck_encoder(cin, zdim, nf)
        layers += [nn.ConvTranspose2d(zdim, nf * 8, kernel_size=4, stride=1, padding=0, bias=False), nn.ReLU(),
                   _conv(nf * 8, nf * 8, 3), nn.ReLU()]
        for width, groups in ((nf * 4, 64), (nf * 2, 32), (nf, 16)):  # 4 -> 8 -> 16 -> 32, each with a 3x3 conv
            layers += _conv_norm_relu(_deconv(width * 2, width), groups, width)
            layers += _conv_norm_relu(_conv(width, width, 3), groups, width)
        layers.append(nn.Upsample(scale_factor=2, mode="nearest"))  # 32 -> 64
        layers += _conv_norm_relu(_conv(nf, nf, 3), 16, nf)
        layers += _conv_norm_relu(_conv(nf, nf, 5), 16, nf)
        layers.append(_conv(nf, cout, 5))
        if activation is not None:
            layers.append(activation())
        self.network = nn.Sequential(*layers)

    def forward(self, image: Tensor) -> Tensor:
        return self.network(image)


class ConfNet(nn.Module):
    """Confidence maps: (softplus 2x64x64 for the L1 loss, softplus 2x16x16 for the perceptual loss).

    `cout` is accepted for the official signature but, as in the official code, both heads have 2 channels
    (the map for the reconstruction and for its flip).
    """

    def __init__(self, cin: int, cout: int, zdim: int = 128, nf: int = 64) -> None:
        super().__init__()
        self.cout = cout
        layers = _bottleneck_encoder(cin, zdim, nf)
        layers += [nn.ConvTranspose2d(zdim, nf * 8, kernel_size=4, stride=1, padding=0, bias=False), nn.ReLU(),
                   *_conv_norm_relu(_deconv(nf * 8, nf * 4), 64, nf * 4),
                   *_conv_norm_relu(_deconv(nf * 4, nf * 2), 32, nf * 2)]
        self.network = nn.Sequential(*layers)
        self.out_net1 = nn.Sequential(*_conv_norm_relu(_deconv(nf * 2, nf), 16, nf),
                                      *_conv_norm_relu(_deconv(nf, nf), 16, nf),
                                      _conv(nf, 2, 5), nn.Softplus())
        self.out_net2 = nn.Sequential(_conv(nf * 2, 2, 3), nn.Softplus())

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        features = self.network(image)
        return self.out_net1(features), self.out_net2(features)


# ----------------------------------------------------------------------------------------------------------------
# Configurations

NET_NAMES = ("netD", "netA", "netL", "netV", "netC")


@dataclass(frozen=True)
class NetConfig:
    """Constructor arguments of one network; `kind` is Encoder, EDDeconv or ConfNet."""

    kind: str
    cin: int
    cout: int
    nf: int
    zdim: int | None = None
    tanh: bool = True

    def build(self) -> nn.Module:
        activation: Activation = nn.Tanh if self.tanh else None
        if self.kind == "Encoder":
            return Encoder(self.cin, self.cout, nf=self.nf, activation=activation)
        if self.kind in ("EDDeconv", "ConfNet"):
            _check_divisible(self.nf)
        if self.kind == "EDDeconv":
            return EDDeconv(self.cin, self.cout, zdim=int(self.zdim or 128), nf=self.nf, activation=activation)
        if self.kind == "ConfNet":
            return ConfNet(self.cin, self.cout, zdim=int(self.zdim or 128), nf=self.nf)
        raise ValueError(f"unknown Unsup3d network kind {self.kind!r}")


CELEBA_CONFIGS: dict[str, NetConfig] = {
    "netD": NetConfig("EDDeconv", 3, 1, nf=64, zdim=256, tanh=False),
    "netA": NetConfig("EDDeconv", 3, 3, nf=64, zdim=256),
    "netL": NetConfig("Encoder", 3, 4, nf=32),
    "netV": NetConfig("Encoder", 3, 6, nf=32),
    "netC": NetConfig("ConfNet", 3, 2, nf=64, zdim=128),
}


def celeba_networks(with_conf: bool = True) -> dict[str, nn.Module]:
    """The CelebA model of `train_celeba.yml` (the one SD-GAN's demo loads): netD, netA, netL, netV and netC."""
    return {name: config.build() for name, config in CELEBA_CONFIGS.items() if with_conf or name != "netC"}


def infer_config(name: str, state: Mapping[str, Tensor]) -> NetConfig:
    """Constructor arguments of network `name` read from its state dict's shapes (nf, zdim, channels).

    The kind follows from the keys (ConfNet has `out_net1.*`; an Encoder has no GroupNorm, so no 1-D
    `network.1.weight`); the activation of an EDDeconv is not stored, so it follows Unsup3d's convention:
    netD has none, every other EDDeconv ends in tanh.
    """
    first = state.get("network.0.weight")
    if first is None or first.ndim != 4:
        raise ValueError(f"{name}: no 4-D network.0.weight, not an Unsup3d network")
    nf, cin = int(first.shape[0]), int(first.shape[1])
    if any(key.startswith("out_net1.") for key in state):
        zdim = int(state["network.11.weight"].shape[0])
        return NetConfig("ConfNet", cin, int(state["out_net2.0.weight"].shape[0]), nf=nf, zdim=zdim)
    norm = state.get("network.1.weight")
    if norm is not None and norm.ndim == 1:
        zdim = int(state["network.11.weight"].shape[0])
        last = max((key for key in state if key.startswith("network.") and key.endswith(".weight")),
                   key=lambda key: int(key.split(".")[1]))
        return NetConfig("EDDeconv", cin, int(state[last].shape[0]), nf=nf, zdim=zdim, tanh=name != "netD")
    cout = int(state["network.10.weight"].shape[0])
    return NetConfig("Encoder", cin, cout, nf=nf)


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (what training-half.md §2 lists per CelebA network)."""
    return sum(param.numel() for param in module.parameters())


def _check_divisible(nf: int) -> None:
    """GroupNorm(16, nf) needs nf to be a multiple of 16: reject other widths with a clear message."""
    if nf % 16:
        raise ValueError(f"nf={nf} is not a multiple of 16 (GroupNorm(16, nf))")


__all__ = ["CELEBA_CONFIGS", "NET_NAMES", "ConfNet", "EDDeconv", "Encoder", "NetConfig", "celeba_networks",
           "count_parameters", "infer_config"]

