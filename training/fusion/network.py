"""The SD-GAN semantic fusion network: (face, placed template, canonical maps) -> W+ offset n_o.

Same computation and the same state dict (names, shapes, official tensor layouts) as the official
`Semantic_Fusion_Network` (MontaEllis/SD-GAN `model.py`), so the released `checkpoint_latest.pt` loads
strictly and the official `test.py` loads ours. Five sub-networks, named as there:

- `arcfacenet`: an ArcFace ResNet-18 with SE blocks (IRBlock, PReLU) on the face; its feature map is the
  "segmap" of the fusion block.
- `masknet`: a ResNet-18 (every stage stride 2) on the placed attribute template.
- `encoder`: the Zencoder on the 9-channel canonical maps, pooled to one style code per face-image channel
  (masked means, with masks `face != 0`).
- `fusion`: ACE (SPADE plus per-region style codes) normalising the template features under the face features.
- `regre`: two locally connected layers and an affine InstanceNorm1d: (B, num_ws, w_dim).

Leaner than the official code where the numbers allow it (all checked against recorded official outputs):
locally connected layers are batched matmuls over positions, with the weight kept as (positions, in, out) and
converted from/to the official (1, out, in, positions, 1) layout only when the state dict is read or written;
the pooling loops are tensor ops; ACE's per-region style map is piecewise constant, so its 5x5 convolutions
are computed from 25 taps x regions matrix products instead of a dense (B, 512, H, W) map; the unused
`fc_mu3..` layers and `noise_var` exist for the state dict only, and `fc_mu0` / `fc_mu1` run only where a
region needs them (normally nowhere: ArcFace channel 2 is non-zero everywhere, and it overwrites them).

PyTorch 2.13's CPU batch/instance-norm backward returns a wrong input gradient at batch size 1 when the
incoming gradient has channels-last-like strides (which a matmul-based layer hands back); every norm here makes
its incoming gradient contiguous at batch size 1 (`_guard_grad`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FusionArch", "LocallyConnected1d", "SemanticFusionNetwork"]

FACE_CHANNELS = 3  # the Zencoder pools one code per face-image channel; ACE reads that many segmap channels
SE_REDUCTION = 16
ACE_KERNEL = 5


@dataclass(frozen=True)
class FusionArch:
    """Sizes of the network; the defaults are the official model (256 px, 128,386,343 parameters)."""

    image_size: int = 256  # face / template size; the regressor has (image_size / 16)^2 positions
    canonical_channels: int = 9  # Unsup3d canonical maps stacked
    widths: tuple[int, int, int, int] = (64, 128, 256, 512)  # the four stages of both ResNet branches
    encoder_width: int = 32  # Zencoder ngf: ngf, 2 ngf, 4 ngf, then 8 ngf after the transposed conv
    style_length: int = 512  # Zencoder output channels = ACE style code length (fc_mu in/out)
    spade_hidden: int = 512  # SPADE's shared conv width
    w_dim: int = 512  # tree_connect_1 output channels = the generator's style dim
    num_ws: int = 14  # tree_connect_2 output channels = the generator's W+ rows
    style_slots: int = 19  # fc_mu0 .. fc_mu{style_slots-1} (only 0..2 are ever used)

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if len(self.widths) != 4 or any(w < 1 for w in self.widths):
            raise ValueError(f"widths must be four positive ints, got {self.widths}")
        if self.image_size < 16 or self.image_size % 16:
            raise ValueError(f"image_size must be a positive multiple of 16, got {self.image_size}")
        if self.style_slots < FACE_CHANNELS:
            raise ValueError(f"style_slots must be >= {FACE_CHANNELS}, got {self.style_slots}")
        for name in ("canonical_channels", "encoder_width", "style_length", "spade_hidden", "w_dim", "num_ws"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def feature_size(self) -> int:
        """Side of both ResNet feature maps (image_size / 16)."""
        return self.image_size // 16

    @property
    def positions(self) -> int:
        """Regressor positions: the feature map's pixels."""
        return self.feature_size**2

    def to_json(self) -> dict[str, Any]:
        """Plain types only (saved inside checkpoints, read with weights_only=True)."""
        data = asdict(self)
        data["widths"] = list(self.widths)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FusionArch:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown FusionArch fields {unknown}")
        values = dict(data)
        if "widths" in values:
            values["widths"] = tuple(values["widths"])
        return cls(**values)


# ----------------------------------------------------------------------------------------------------------------
# The batch-1 norm gradient guard


def _contiguous(grad: Tensor) -> Tensor:
    return grad.contiguous()


def _guard_grad(output: Tensor) -> Tensor:
    """At batch size 1, make the gradient reaching a norm's backward contiguous (torch 2.13 CPU bug, see module doc).

    A tensor hook runs on the gradient before the norm's backward sees it, and stays attached to the norm's
    output even when an in-place activation modifies that tensor afterwards.
    """
    if output.shape[0] == 1 and output.requires_grad:
        output.register_hook(_contiguous)
    return output


class BatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d with the batch-1 gradient guard (same state dict)."""

    def forward(self, x: Tensor) -> Tensor:
        return _guard_grad(super().forward(x))


class InstanceNorm(nn.Module):
    """Parameter-free instance norm over any channel count, with the batch-1 gradient guard.

    Stands in for the official `InstanceNorm2d(n, affine=False)` modules, which hold no state (one of them is
    declared for 64 channels and applied to 256, which torch accepts with a warning on every call).
    """

    def forward(self, x: Tensor) -> Tensor:
        return _guard_grad(F.instance_norm(x))


class AffineInstanceNorm1d(nn.InstanceNorm1d):
    """nn.InstanceNorm1d(affine=True) with the batch-1 gradient guard (same state dict)."""

    def forward(self, x: Tensor) -> Tensor:
        return _guard_grad(super().forward(x))


# ----------------------------------------------------------------------------------------------------------------
# The two ResNet branches (module names and construction order as the official code: same RNG stream, same init)


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


def downsample(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False), BatchNorm2d(cout))


class SEBlock(nn.Module):
    """Squeeze-and-excitation (the hidden width is floored at 1 so that tiny widths work)."""

    def __init__(self, channels: int, reduction: int = SE_REDUCTION):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc = nn.Sequential(nn.Linear(channels, hidden), nn.PReLU(), nn.Linear(hidden, channels), nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        return x * self.fc(x.mean((2, 3)))[:, :, None, None]


class IRBlock(nn.Module):
    """ArcFace's improved residual block: BN, conv, BN, PReLU, conv (stride), BN, SE, + shortcut, PReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1, shortcut: nn.Module | None = None):
        super().__init__()
        self.bn0 = BatchNorm2d(cin)
        self.conv1 = conv3x3(cin, cin)
        self.bn1 = BatchNorm2d(cin)
        self.prelu = nn.PReLU()
        self.conv2 = conv3x3(cin, cout, stride)
        self.bn2 = BatchNorm2d(cout)
        self.downsample = shortcut
        self.se = SEBlock(cout)

    def forward(self, x: Tensor) -> Tensor:
        out = self.prelu(self.bn1(self.conv1(self.bn0(x))))
        out = self.se(self.bn2(self.conv2(out)))
        out = out + (x if self.downsample is None else self.downsample(x))
        return self.prelu(out)


class BasicBlock(nn.Module):
    """ResNet's basic block (in-place ReLUs, as the official one)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, shortcut: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(cin, cout, stride)
        self.bn1 = BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(cout, cout)
        self.bn2 = BatchNorm2d(cout)
        self.downsample = shortcut

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)


def _make_layer(block: type[nn.Module], cin: int, cout: int, stride: int) -> nn.Sequential:
    shortcut = downsample(cin, cout, stride) if stride != 1 or cin != cout else None
    return nn.Sequential(block(cin, cout, stride, shortcut), block(cout, cout))


class ArcFaceResNet(nn.Module):
    """resnet_face18: conv, BN, PReLU, max-pool, four IRBlock stages (strides 1, 2, 2, 2) -> image_size / 16."""

    def __init__(self, widths: tuple[int, int, int, int]):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, padding=1, bias=False)
        self.bn1 = BatchNorm2d(widths[0])
        self.prelu = nn.PReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=2, stride=2)
        cin = widths[0]
        for index, (width, stride) in enumerate(zip(widths, (1, 2, 2, 2)), start=1):
            self.add_module(f"layer{index}", _make_layer(IRBlock, cin, width, stride))
            cin = width
        for m in self.modules():  # the official init, in module order (same RNG stream)
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                nn.init.constant_(m.bias, 0)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.prelu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class TemplateResNet(nn.Module):
    """resnet18 without max-pool, every stage stride 2 -> image_size / 16."""

    def __init__(self, widths: tuple[int, int, int, int]):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        cin = widths[0]
        for index, width in enumerate(widths, start=1):
            self.add_module(f"layer{index}", _make_layer(BasicBlock, cin, width, 2))
            cin = width
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


# ----------------------------------------------------------------------------------------------------------------
# Zencoder


class Zencoder(nn.Module):
    """Canonical maps -> codes (B, style_length, h, w) -> one masked-mean code per face channel (B, 3, style_length).

    The masks are `face != 0` at the codes' size (nearest resize); an empty mask gives a zero code, as the
    official loop does. `model` keeps the official Sequential indices (1, 4, 7, 10, 14 hold weights).
    """

    def __init__(self, cin: int, cout: int, ngf: int):
        super().__init__()
        # not in place: instance_norm returns a view, and an in-place op on it costs copies in the backward
        layers: list[nn.Module] = [nn.ReflectionPad2d(1), nn.Conv2d(cin, ngf, kernel_size=3),
                                   InstanceNorm(), nn.LeakyReLU(0.2)]
        for mult in (1, 2):
            layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=2, padding=1),
                       InstanceNorm(), nn.LeakyReLU(0.2)]
        layers += [nn.ConvTranspose2d(ngf * 4, ngf * 8, kernel_size=3, stride=2, padding=1, output_padding=1),
                   InstanceNorm(), nn.LeakyReLU(0.2),
                   nn.ReflectionPad2d(1), nn.Conv2d(ngf * 8, cout, kernel_size=3), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, canonical: Tensor, face: Tensor) -> Tensor:
        codes = self.model(canonical)
        b, f, h, w = codes.shape
        masks = F.interpolate(face, size=(h, w), mode="nearest") != 0
        masks = masks.flatten(2).to(codes.dtype)  # (B, 3, hw)
        # codes on the left: its gradient comes back contiguous (on the right, transposed, it would not)
        sums = torch.bmm(codes.reshape(b, f, h * w), masks.transpose(1, 2)).transpose(1, 2)  # (B, 3, F)
        return sums / masks.sum(2, keepdim=True).clamp_min(1)  # empty mask: 0 / 1


# ----------------------------------------------------------------------------------------------------------------
# ACE


class SPADE(nn.Module):
    """SPADE's learned modulation of the segmap (the official class also declares a norm it never uses)."""

    def __init__(self, norm_nc: int, label_nc: int, hidden: int):
        super().__init__()
        pad = ACE_KERNEL // 2
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_nc, hidden, kernel_size=ACE_KERNEL, padding=pad),
                                        nn.ReLU(inplace=True))
        self.mlp_gamma = nn.Conv2d(hidden, norm_nc, kernel_size=ACE_KERNEL, padding=pad)
        self.mlp_beta = nn.Conv2d(hidden, norm_nc, kernel_size=ACE_KERNEL, padding=pad)

    def forward(self, segmap: Tensor) -> tuple[Tensor, Tensor]:
        actv = self.mlp_shared(segmap)
        return self.mlp_gamma(actv), self.mlp_beta(actv)


class ACE(nn.Module):
    """SEAN's ACE block: instance-normalise x, modulate by a blend of SPADE(segmap) and per-region style codes.

    Regions: for j = 0, 1, 2 in turn, the pixels where segmap channel j is non-zero get relu(fc_mu_j(code_j)),
    later j overwriting earlier ones; pixels in none of them get 0. That map is piecewise constant, so
    conv(map) = bias + sum over regions and taps of shift_tap(region indicator) * (W_tap @ value), which is what
    `_style_modulation` computes (no dense (B, style_length, H, W) map, no dense 5x5 convolution over it).
    """

    def __init__(self, norm_nc: int, label_nc: int, style_length: int, hidden: int, slots: int):
        super().__init__()
        self.Spade = SPADE(norm_nc, label_nc, hidden)
        self.style_length = style_length
        self.blending_gamma = nn.Parameter(torch.zeros(1))
        self.blending_beta = nn.Parameter(torch.zeros(1))
        self.noise_var = nn.Parameter(torch.zeros(norm_nc))  # unused (official: commented out), kept for loading
        self.slots = slots
        for j in range(slots):
            self.add_module(f"fc_mu{j}", nn.Linear(style_length, style_length))
        pad = ACE_KERNEL // 2
        self.conv_gamma = nn.Conv2d(style_length, norm_nc, kernel_size=ACE_KERNEL, padding=pad)
        self.conv_beta = nn.Conv2d(style_length, norm_nc, kernel_size=ACE_KERNEL, padding=pad)

    def regions(self, segmap: Tensor, count: int) -> list[tuple[int, Tensor]]:
        """(j, indicator (B, H, W) bool) for each j whose region is non-empty somewhere in the batch."""
        taken = torch.zeros_like(segmap[:, 0], dtype=torch.bool)
        found = []
        for j in reversed(range(count)):  # the last j wins where masks overlap
            mask = segmap[:, j] != 0
            region = mask & ~taken
            if bool(region.any()):
                found.append((j, region))
            taken |= mask
        return found[::-1]

    def _style_modulation(self, segmap: Tensor, style_codes: Tensor) -> tuple[Tensor, Tensor] | None:
        """conv_gamma(map), conv_beta(map) of the per-region style map, or None when every region is empty."""
        b, _, h, w = segmap.shape
        found = self.regions(segmap, style_codes.shape[1])
        if not found:
            return None
        values = torch.stack([F.relu(getattr(self, f"fc_mu{j}")(style_codes[:, j])) for j, _ in found], 1)
        indicators = torch.stack([region for _, region in found], 1).to(values.dtype)  # (B, R, H, W)
        taps = F.unfold(indicators, ACE_KERNEL, padding=ACE_KERNEL // 2)  # (B, R * 25, H * W)
        out = []
        for conv in (self.conv_gamma, self.conv_beta):
            weight = conv.weight.flatten(2)  # (N, L, 25)
            per_tap = torch.einsum("brl,nlt->bnrt", values, weight).flatten(2)  # (B, N, R * 25)
            out.append(torch.baddbmm(conv.bias[None, :, None], per_tap, taps).view(b, -1, h, w))
        return out[0], out[1]

    def forward(self, x: Tensor, segmap: Tensor, style_codes: Tensor) -> Tensor:
        normalized = _guard_grad(F.instance_norm(x))
        if segmap.shape[2:] != x.shape[2:]:
            segmap = F.interpolate(segmap, size=x.shape[2:], mode="nearest")
        gamma_spade, beta_spade = self.Spade(segmap)
        style = self._style_modulation(segmap, style_codes)
        if style is None:  # no region anywhere: the style map is 0 and its convs give their biases
            style = (self.conv_gamma.bias[None, :, None, None].expand_as(gamma_spade),
                     self.conv_beta.bias[None, :, None, None].expand_as(beta_spade))
        gamma_alpha = torch.sigmoid(self.blending_gamma)
        beta_alpha = torch.sigmoid(self.blending_beta)
        gamma = gamma_alpha * style[0] + (1 - gamma_alpha) * gamma_spade
        beta = beta_alpha * style[1] + (1 - beta_alpha) * beta_spade
        return torch.addcmul(beta, normalized, gamma + 1)


# ----------------------------------------------------------------------------------------------------------------
# Regressor


class LocallyConnected1d(nn.Module):
    """out[b, o, p] = sum_i x[b, i, p] W_p[i, o] (kernel size 1, stride 1, no bias: all the official uses).

    The weight lives as (positions, in, out) so that the layer is one batched matmul; `state_dict()` and
    `load_state_dict()` speak the official (1, out, in, positions, 1) layout.
    """

    def __init__(self, in_channels: int, out_channels: int, positions: int):
        super().__init__()
        self.in_channels, self.out_channels, self.positions = in_channels, out_channels, positions
        official = torch.randn(1, out_channels, in_channels, positions, 1)  # the official init (and RNG use)
        self.weight = nn.Parameter(official[0, :, :, :, 0].permute(2, 1, 0).contiguous())

    @property
    def official_shape(self) -> tuple[int, int, int, int, int]:
        return (1, self.out_channels, self.in_channels, self.positions, 1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, in, positions) -> (B, out, positions), a view of a (positions, B, out) result."""
        return torch.bmm(x.permute(2, 0, 1).contiguous(), self.weight).permute(1, 2, 0)

    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str, keep_vars: bool) -> None:
        weight = self.weight if keep_vars else self.weight.detach()
        destination[prefix + "weight"] = weight.permute(2, 1, 0)[None, :, :, :, None]

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, local_metadata: Any,
                              strict: bool, missing_keys: list[str], unexpected_keys: list[str],
                              error_msgs: list[str]) -> None:
        key = prefix + "weight"
        if strict:
            unexpected_keys.extend(k for k in state_dict if k.startswith(prefix) and k != key)
        if key not in state_dict:
            missing_keys.append(key)
            return
        value = state_dict[key]
        if tuple(value.shape) != self.official_shape:
            error_msgs.append(f"size mismatch for {key}: copying a param with shape {tuple(value.shape)} from "
                              f"checkpoint, the shape in current model is {torch.Size(self.official_shape)}.")
            return
        with torch.no_grad():
            self.weight.copy_(value[0, :, :, :, 0].permute(2, 1, 0))


class Regressor(nn.Module):
    """(B, C, H, W) -> LC over the H*W positions (C -> w_dim), ReLU, LC over the w_dim positions
    (H*W -> num_ws), ReLU, affine InstanceNorm1d over w_dim -> (B, num_ws, w_dim)."""

    def __init__(self, channels: int, positions: int, w_dim: int, num_ws: int):
        super().__init__()
        self.tree_connect_1 = nn.Sequential(LocallyConnected1d(channels, w_dim, positions), nn.ReLU())
        self.tree_connect_2 = nn.Sequential(LocallyConnected1d(positions, num_ws, w_dim), nn.ReLU())
        self.in3 = AffineInstanceNorm1d(num_ws, affine=True)

    def forward(self, x: Tensor) -> Tensor:
        # bmm on permuted (non-contiguous) batches falls back to a path ~20x slower: permute, then copy (2 MB)
        lc1, lc2 = self.tree_connect_1[0], self.tree_connect_2[0]
        if x.requires_grad:  # the gradient comes back position-major; hand it upstream in the usual layout
            x.register_hook(_contiguous)
        hidden = torch.bmm(x.flatten(2).permute(2, 0, 1).contiguous(), lc1.weight)  # (positions, B, w_dim)
        hidden = F.relu(hidden).permute(2, 1, 0).contiguous()  # (w_dim, B, positions)
        out = F.relu(torch.bmm(hidden, lc2.weight))  # (w_dim, B, num_ws)
        return self.in3(out.permute(1, 2, 0).contiguous())


# ----------------------------------------------------------------------------------------------------------------
# The whole network


class SemanticFusionNetwork(nn.Module):
    """forward(face, template, canonical) -> n_o (B, num_ws, w_dim); images in [-1, 1].

    face and template: (B, 3, image_size, image_size); canonical: (B, canonical_channels, Sc, Sc), Sc >= 8
    (SD-GAN uses image_size / 2). `SemanticFusionNetwork()` is the official model; keyword overrides change
    single FusionArch fields (`SemanticFusionNetwork(image_size=64, w_dim=32)`).
    """

    def __init__(self, arch: FusionArch | None = None, **overrides: Any):
        super().__init__()
        if overrides:
            arch = FusionArch.from_json({**(arch or FusionArch()).to_json(), **overrides})
        self.arch = arch = arch or FusionArch()
        widths = arch.widths
        self.arcfacenet = ArcFaceResNet(widths)
        self.masknet = TemplateResNet(widths)
        self.fusion = ACE(widths[3], widths[3], arch.style_length, arch.spade_hidden, arch.style_slots)
        self.regre = Regressor(widths[3], arch.positions, arch.w_dim, arch.num_ws)
        self.encoder = Zencoder(arch.canonical_channels, arch.style_length, arch.encoder_width)

    def _check_inputs(self, face: Tensor, template: Tensor, canonical: Tensor) -> None:
        size = self.arch.image_size
        for name, image in (("face_image", face), ("mask_image", template)):
            if image.dim() != 4 or image.shape[1] != FACE_CHANNELS or tuple(image.shape[2:]) != (size, size):
                raise ValueError(f"{name} must be (B, 3, {size}, {size}), got {tuple(image.shape)}")
        if canonical.dim() != 4 or canonical.shape[1] != self.arch.canonical_channels or min(canonical.shape[2:]) < 8:
            raise ValueError(f"canonical must be (B, {self.arch.canonical_channels}, >=8, >=8), "
                             f"got {tuple(canonical.shape)}")
        if not face.shape[0] == template.shape[0] == canonical.shape[0]:
            raise ValueError(f"batch sizes differ: {face.shape[0]}, {template.shape[0]}, {canonical.shape[0]}")

    def forward(self, face_image: Tensor, mask_image: Tensor, canonical: Tensor) -> Tensor:
        self._check_inputs(face_image, mask_image, canonical)
        face_feature = self.arcfacenet(face_image)
        mask_feature = self.masknet(mask_image)
        style_codes = self.encoder(canonical, face_image)
        fused = self.fusion(mask_feature, face_feature, style_codes)
        return self.regre(fused)

    def extra_repr(self) -> str:
        return f"arch={self.arch}"
