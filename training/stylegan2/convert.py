"""Convert NVlabs stylegan2-ada-pytorch / stylegan3 (`--cfg stylegan2`) network pickles to rosinality checkpoints.

NVlabs snapshots are plain pickles whose networks are `torch_utils.persistence` objects: each one carries the
source code of its module and is rebuilt by executing that code. We never do that. A restricted unpickler
replaces the persistence hook with a stub that keeps only the pickled `__dict__` (parameters, buffers,
submodules, scalar attributes) and refuses every global not on a short allowlist (the generic
`training.common.checkpoint.RestrictedUnpickler`, with plain torch.nn modules as inert stubs). The stub trees
are then mapped, with the numeric rescaling the two code bases need, onto the state-dict names of
`training.stylegan2.networks` (which are rosinality/stylegan2-pytorch's). See docs/convert_nvlabs.md.

CLI: python -m training.stylegan2.convert network-snapshot.pkl out.pt [--size N] [--g-ema-only]
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.common.checkpoint import CheckpointError, PickledStub, UnsupportedPickleError, load_foreign_pickle
from training.stylegan2.networks import Discriminator, Generator, channel_table

SQRT2 = math.sqrt(2.0)
NETWORK_KEYS = ("G", "D", "G_ema")


class ConversionError(ValueError):
    """The pickle loaded, but its networks cannot be expressed exactly as a rosinality checkpoint."""


# ----------------------------------------------------------------------------------------------------------------
# Restricted unpickling


@dataclass
class PersistentStub:
    """What `_reconstruct_persistent_obj(meta)` would have rebuilt, minus the class: name and pickled state."""

    class_name: str
    version: Any
    state: dict[str, Any]


class EasyDictStub(dict):
    """`dnnlib.EasyDict` is a dict with attribute access; a plain dict subclass holds the same data."""


def _reconstruct_persistent_stub(meta: Any) -> PersistentStub:
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("class_name"), str):
        raise UnsupportedPickleError("torch_utils.persistence object with unexpected metadata")
    state = meta.get("state") or {}
    if not isinstance(state, dict):
        raise UnsupportedPickleError(f"persistent {meta['class_name']}: state is not a dict")
    # meta["module_src"] is deliberately dropped: it is code, and we never run it.
    return PersistentStub(class_name=meta["class_name"], version=meta.get("version"), state=dict(state))


def _is_torch_module(module: str, name: str) -> bool:
    """Plain `torch.nn.modules.*` classes (e.g. an Identity inside an AugmentPipe) load as inert stubs."""
    return module.startswith("torch.nn.modules.") and name.isidentifier() and name[:1].isupper()


# On top of the common allowlist: the persistence hook (its module source is dropped) and EasyDict as a dict.
NVLABS_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_stub,
    ("dnnlib.util", "EasyDict"): EasyDictStub,
    ("dnnlib", "EasyDict"): EasyDictStub,
}


# ----------------------------------------------------------------------------------------------------------------
# Stub tree -> flat NVlabs-named tensors and attributes


@dataclass
class NVlabsNetwork:
    """One network of a snapshot, flattened: `synthesis.b8.conv0.weight` -> tensor, `...weight_gain` -> float."""

    name: str
    class_name: str
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)
    classes: dict[str, str] = field(default_factory=dict)
    init_kwargs: dict[str, Any] = field(default_factory=dict)


def _plain(value: Any) -> Any:
    """EasyDict stubs, OrderedDicts and numpy scalars -> plain Python, so kwargs print and compare simply."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str, np.generic))


def _flatten(node: Any, prefix: str, net: NVlabsNetwork) -> None:
    if isinstance(node, PersistentStub):
        state, class_name = node.state, node.class_name
    elif isinstance(node, PickledStub) and node.qualname.startswith("torch.nn.modules."):
        state, class_name = (node.state if isinstance(node.state, dict) else {}), node.qualname
    else:
        raise ConversionError(f"{net.name}: {prefix or '<root>'} is a {type(node).__name__}, not a module")
    net.classes[prefix.rstrip(".")] = class_name
    for group in ("_parameters", "_buffers"):
        for key, tensor in (state.get(group) or {}).items():
            if tensor is not None:
                net.tensors[prefix + key] = tensor.detach().to(torch.float32).contiguous()
    for key, child in (state.get("_modules") or {}).items():
        if child is not None:
            _flatten(child, f"{prefix}{key}.", net)
    for key, value in state.items():
        if not key.startswith("_") and _is_scalar(value):
            net.attrs[prefix + key] = _plain(value)
    if not prefix and isinstance(state.get("_init_kwargs"), dict):
        net.init_kwargs = _plain(state["_init_kwargs"])


def load_nvlabs_pickle(path: str | Path) -> dict[str, NVlabsNetwork]:
    """Read G / D / G_ema of an NVlabs snapshot without executing any pickled code."""
    # Any global beyond tensors, containers, the persistence hook and torch.nn modules is refused outright.
    data, _ = load_foreign_pickle(path, extra_globals=NVLABS_GLOBALS, stub_unknown=_is_torch_module)
    if not isinstance(data, dict):
        raise ConversionError(f"{path}: expected a dict of networks, got {type(data).__name__}")
    networks = {}
    for key in NETWORK_KEYS:
        if data.get(key) is not None:
            net = NVlabsNetwork(name=key, class_name="")
            _flatten(data[key], "", net)
            net.class_name = net.classes[""]
            networks[key] = net
    return networks


# ----------------------------------------------------------------------------------------------------------------
# Numeric mapping helpers


def _tensor(net: NVlabsNetwork, key: str) -> torch.Tensor:
    if key not in net.tensors:
        raise ConversionError(f"{net.name}: missing tensor {key!r}")
    return net.tensors[key]


def _attr(net: NVlabsNetwork, key: str, default: Any = ...) -> Any:
    if key in net.attrs:
        return net.attrs[key]
    if default is ...:
        raise ConversionError(f"{net.name}: missing attribute {key!r}")
    return default


def _scaled(tensor: torch.Tensor, factor: float) -> torch.Tensor:
    """tensor * factor, skipping factors that are 1 up to rounding so unchanged weights stay bit-identical."""
    return tensor.clone() if abs(factor - 1.0) < 1e-9 else tensor * factor


def _check_activation(net: NVlabsNetwork, layer: str, activation: str) -> None:
    found = _attr(net, f"{layer}.activation", "linear")
    if found != activation:
        raise ConversionError(f"{net.name}: {layer} uses activation {found!r}, the target expects {activation!r}")
    if activation == "lrelu" and abs(float(_attr(net, f"{layer}.act_gain", SQRT2)) - SQRT2) > 1e-6:
        raise ConversionError(f"{net.name}: {layer} has a leaky-ReLU gain other than sqrt(2)")


def _equal_linear(net: NVlabsNetwork, src: str, lr_mul: float) -> tuple[torch.Tensor, torch.Tensor]:
    """FullyConnectedLayer -> EqualLinear. Both compute x @ (W * gain).T + b * bias_gain; EqualLinear's gain
    is lr_mul / sqrt(in) and its bias gain lr_mul, so the stored tensors absorb the ratio of the two gains."""
    weight, bias = _tensor(net, f"{src}.weight"), _tensor(net, f"{src}.bias")
    in_features = weight.shape[1]
    weight_factor = float(_attr(net, f"{src}.weight_gain")) * math.sqrt(in_features) / lr_mul
    bias_factor = float(_attr(net, f"{src}.bias_gain", 1.0)) / lr_mul
    return _scaled(weight, weight_factor), _scaled(bias, bias_factor)


def _equal_conv(net: NVlabsNetwork, src: str) -> torch.Tensor:
    """Conv2dLayer -> EqualConv2d: both multiply the stored weight by a gain; EqualConv2d's is 1/sqrt(fan_in)."""
    weight = _tensor(net, f"{src}.weight")
    fan_in = weight[0].numel()
    return _scaled(weight, float(_attr(net, f"{src}.weight_gain")) * math.sqrt(fan_in))


def _filter_2d(net: NVlabsNetwork, key: str) -> torch.Tensor:
    """NVlabs resample filter (normalised, 2-D, or 1-D when separable) as the normalised 2-D kernel."""
    taps = _tensor(net, key)
    kernel = taps[:, None] * taps[None, :] if taps.ndim == 1 else taps
    if kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1]:
        raise ConversionError(f"{net.name}: {key} is not a square FIR filter")
    return kernel.clone()


def _blur_taps(kernel: torch.Tensor) -> list[float]:
    """The 1-D taps of a separable kernel, as small integers when they are (e.g. [1, 3, 3, 1])."""
    taps = kernel.sum(dim=1)
    if not torch.allclose(taps[:, None] * taps[None, :] / taps.sum(), kernel, atol=1e-7):
        raise ConversionError("resample filter is not separable; the target needs a 1-D blur kernel")
    ratios = (taps / taps.min()).tolist()
    if all(abs(r - round(r)) < 1e-4 for r in ratios):
        return [round(r) for r in ratios]
    return [float(t) for t in taps]


def _log2_resolution(net: NVlabsNetwork, size: int) -> int:
    log2 = round(math.log2(size)) if size > 0 else 0
    if 2**log2 != size or not 8 <= size <= 1024:
        raise ConversionError(f"{net.name}: resolution {size} is not a power of two in [8, 1024]")
    return log2


def _check_unconditional(net: NVlabsNetwork) -> None:
    c_dim = int(_attr(net, "c_dim", net.init_kwargs.get("c_dim", 0)) or 0)
    has_label_mapping = any(key.startswith("mapping.embed.") for key in net.tensors)
    if net.class_name == "Discriminator":
        has_label_mapping = has_label_mapping or any(key.startswith("mapping.") for key in net.tensors)
    if c_dim != 0 or has_label_mapping:
        raise ConversionError(f"{net.name}: conditional network (c_dim={c_dim}); rosinality models are "
                              "unconditional, so only c_dim == 0 pickles can be converted")


# ----------------------------------------------------------------------------------------------------------------
# Generator


def _styled_conv(net: NVlabsNetwork, src: str, dst: str, out: dict[str, torch.Tensor]) -> None:
    """SynthesisLayer -> StyledConv. NVlabs modulates the raw weight; ModulatedConv2d multiplies by
    1/sqrt(fan_in) first, so the weight is stored times sqrt(fan_in) (demodulation would cancel the scale
    up to its 1e-8 epsilon; storing it this way makes the two identical, epsilon included)."""
    _check_activation(net, src, "lrelu")
    if f"{src}.noise_const" not in net.tensors:
        raise ConversionError(f"{net.name}: {src} has no noise input (use_noise=False is not supported)")
    weight = _tensor(net, f"{src}.weight")
    out[f"{dst}.conv.weight"] = (weight * math.sqrt(weight[0].numel())).unsqueeze(0)
    _check_activation(net, f"{src}.affine", "linear")
    out[f"{dst}.conv.modulation.weight"], out[f"{dst}.conv.modulation.bias"] = _equal_linear(net, f"{src}.affine", 1.0)
    out[f"{dst}.noise.weight"] = _tensor(net, f"{src}.noise_strength").reshape(1).clone()
    out[f"{dst}.activate.bias"] = _tensor(net, f"{src}.bias").clone()


def _to_rgb(net: NVlabsNetwork, src: str, dst: str, out: dict[str, torch.Tensor]) -> None:
    """ToRGBLayer -> ToRGB. NVlabs scales the styles by weight_gain, rosinality the weight by 1/sqrt(in):
    the products are the same linear map, so the weight absorbs weight_gain * sqrt(in)."""
    weight = _tensor(net, f"{src}.weight")
    factor = float(_attr(net, f"{src}.weight_gain")) * math.sqrt(weight[0].numel())
    out[f"{dst}.conv.weight"] = _scaled(weight, factor).unsqueeze(0)
    _check_activation(net, f"{src}.affine", "linear")
    out[f"{dst}.conv.modulation.weight"], out[f"{dst}.conv.modulation.bias"] = _equal_linear(net, f"{src}.affine", 1.0)
    out[f"{dst}.bias"] = _tensor(net, f"{src}.bias").reshape(1, -1, 1, 1).clone()


def _generator_info(net: NVlabsNetwork) -> dict[str, Any]:
    if net.class_name != "Generator":
        raise ConversionError(f"{net.name}: expected a Generator, got {net.class_name!r}")
    _check_unconditional(net)
    if "synthesis.b4.const" not in net.tensors:
        raise ConversionError(f"{net.name}: not a StyleGAN2 synthesis network (StyleGAN3 --cfg stylegan3-t/-r "
                              "and other architectures are not supported)")
    if int(_attr(net, "img_channels", 3)) != 3:
        raise ConversionError(f"{net.name}: img_channels must be 3")
    size = int(_attr(net, "img_resolution"))
    n_mlp = int(_attr(net, "mapping.num_layers"))
    w_dim = int(_attr(net, "w_dim"))
    if int(_attr(net, "z_dim")) != w_dim:
        raise ConversionError(f"{net.name}: z_dim != w_dim, but the target maps style_dim -> style_dim")
    for index in range(n_mlp):
        if tuple(_tensor(net, f"mapping.fc{index}.weight").shape) != (w_dim, w_dim):
            raise ConversionError(f"{net.name}: mapping.fc{index} is not {w_dim}x{w_dim}")
    return {"size": size, "log2": _log2_resolution(net, size), "n_mlp": n_mlp, "latent": w_dim,
            "lr_mlp": float(_attr(net, "mapping.fc0.bias_gain", 0.01))}


def convert_generator(net: NVlabsNetwork, lr_mlp: float | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """NVlabs Generator -> (rosinality Generator state dict, info). Only the skip architecture maps 1:1."""
    info = _generator_info(net)
    lr_mlp = info["lr_mlp"] if lr_mlp is None else lr_mlp
    info["lr_mlp"] = lr_mlp
    out: dict[str, torch.Tensor] = {}
    for index in range(info["n_mlp"]):
        _check_activation(net, f"mapping.fc{index}", "lrelu")
        out[f"style.{index + 1}.weight"], out[f"style.{index + 1}.bias"] = _equal_linear(
            net, f"mapping.fc{index}", lr_mlp)
    out["input.input"] = _tensor(net, "synthesis.b4.const").unsqueeze(0).clone()
    _styled_conv(net, "synthesis.b4.conv1", "conv1", out)
    _to_rgb(net, "synthesis.b4.torgb", "to_rgb1", out)
    noises = [_tensor(net, "synthesis.b4.conv1.noise_const")]
    kernel = None
    for log2 in range(3, info["log2"] + 1):
        block, index = f"synthesis.b{2**log2}", log2 - 3
        if _attr(net, f"{block}.architecture", "skip") != "skip" or f"{block}.torgb.weight" not in net.tensors:
            raise ConversionError(f"{net.name}: {block} is not a skip-architecture block; only "
                                  "architecture='skip' generators (the StyleGAN2 default) can be converted")
        if int(_attr(net, f"{block}.conv0.up", 2)) != 2:
            raise ConversionError(f"{net.name}: {block}.conv0 does not upsample by 2")
        _styled_conv(net, f"{block}.conv0", f"convs.{2 * index}", out)
        _styled_conv(net, f"{block}.conv1", f"convs.{2 * index + 1}", out)
        _to_rgb(net, f"{block}.torgb", f"to_rgbs.{index}", out)
        noises += [_tensor(net, f"{block}.conv0.noise_const"), _tensor(net, f"{block}.conv1.noise_const")]
        block_kernel = _filter_2d(net, f"{block}.conv0.resample_filter")
        if not torch.equal(block_kernel, _filter_2d(net, f"{block}.resample_filter")):
            raise ConversionError(f"{net.name}: {block} uses different filters for conv and skip upsampling")
        if kernel is not None and not torch.equal(kernel, block_kernel):
            raise ConversionError(f"{net.name}: resample filters differ between blocks")
        kernel = block_kernel
        # rosinality keeps upsampling kernels pre-multiplied by factor**2 (NVlabs passes gain=up**2 at run time).
        out[f"convs.{2 * index}.conv.blur.kernel"] = block_kernel * 4
        out[f"to_rgbs.{index}.upsample.kernel"] = block_kernel * 4
    for index, noise in enumerate(noises):
        out[f"noises.noise_{index}"] = noise.reshape(1, 1, *noise.shape[-2:]).clone()
    info["blur_kernel"] = _blur_taps(kernel)
    info["channels"] = {4: out["input.input"].shape[1]}
    info["channels"].update({2 ** (i + 3): out[f"to_rgbs.{i}.conv.weight"].shape[2] for i in range(info["log2"] - 2)})
    return out, info


# ----------------------------------------------------------------------------------------------------------------
# Discriminator


def _conv_layer(net: NVlabsNetwork, src: str, dst: str, out: dict[str, torch.Tensor], *, conv_index: int,
                activate: bool) -> None:
    """Conv2dLayer -> ConvLayer children: EqualConv2d at conv_index, FusedLeakyReLU (bias) right after it."""
    _check_activation(net, src, "lrelu" if activate else "linear")
    out[f"{dst}.{conv_index}.weight"] = _equal_conv(net, src)
    if activate:
        out[f"{dst}.{conv_index + 1}.bias"] = _tensor(net, f"{src}.bias").clone()
    elif f"{src}.bias" in net.tensors:
        raise ConversionError(f"{net.name}: {src} has a bias, the target's skip conv has none")


def convert_discriminator(net: NVlabsNetwork) -> tuple[dict[str, torch.Tensor], dict]:
    """NVlabs Discriminator -> (rosinality Discriminator state dict, info). Only the resnet architecture."""
    if net.class_name != "Discriminator":
        raise ConversionError(f"{net.name}: expected a Discriminator, got {net.class_name!r}")
    _check_unconditional(net)
    size = int(_attr(net, "img_resolution"))
    log2 = _log2_resolution(net, size)
    if int(_attr(net, "img_channels", 3)) != 3:
        raise ConversionError(f"{net.name}: img_channels must be 3")
    out: dict[str, torch.Tensor] = {}
    _conv_layer(net, f"b{size}.fromrgb", "convs.0", out, conv_index=0, activate=True)
    channels = {}
    for index, res in enumerate((2**i for i in range(log2, 2, -1)), start=1):
        block, dst = f"b{res}", f"convs.{index}"
        if _attr(net, f"{block}.architecture", "resnet") != "resnet" or f"{block}.skip.weight" not in net.tensors:
            raise ConversionError(f"{net.name}: {block} is not a resnet block; only architecture='resnet' "
                                  "discriminators (the StyleGAN2 default) can be converted")
        if res != size and f"{block}.fromrgb.weight" in net.tensors:
            raise ConversionError(f"{net.name}: {block} has its own fromrgb (skip architecture)")
        _conv_layer(net, f"{block}.conv0", f"{dst}.conv1", out, conv_index=0, activate=True)
        _conv_layer(net, f"{block}.conv1", f"{dst}.conv2", out, conv_index=1, activate=True)
        _conv_layer(net, f"{block}.skip", f"{dst}.skip", out, conv_index=1, activate=False)
        kernel = _filter_2d(net, f"{block}.conv1.resample_filter")
        if not torch.equal(kernel, _filter_2d(net, f"{block}.skip.resample_filter")):
            raise ConversionError(f"{net.name}: {block} uses different filters for conv and skip")
        out[f"{dst}.conv2.0.kernel"], out[f"{dst}.skip.0.kernel"] = kernel.clone(), kernel.clone()
        channels[res] = out[f"{dst}.conv1.0.weight"].shape[0]
    if _attr(net, "b4.architecture", "resnet") != "resnet" or "b4.fromrgb.weight" in net.tensors:
        raise ConversionError(f"{net.name}: the b4 epilogue must use architecture='resnet'")
    if "b4.mbstd" not in net.classes or int(_attr(net, "b4.mbstd.num_channels", 1)) != 1:
        raise ConversionError(f"{net.name}: the target needs a minibatch-stddev layer with num_channels=1")
    _conv_layer(net, "b4.conv", "final_conv", out, conv_index=0, activate=True)
    _check_activation(net, "b4.fc", "lrelu")
    out["final_linear.0.weight"], out["final_linear.0.bias"] = _equal_linear(net, "b4.fc", 1.0)
    _check_activation(net, "b4.out", "linear")
    out["final_linear.1.weight"], out["final_linear.1.bias"] = _equal_linear(net, "b4.out", 1.0)
    if out["final_linear.1.weight"].shape[0] != 1:
        raise ConversionError(f"{net.name}: b4.out has {out['final_linear.1.weight'].shape[0]} outputs (cmap)")
    channels[4] = out["final_conv.0.weight"].shape[0]
    group = _attr(net, "b4.mbstd.group_size", 4)
    info = {"size": size, "channels": channels, "blur_kernel": _blur_taps(kernel),
            "stddev_group": int(group) if group is not None else 1 << 30}
    return out, info


# ----------------------------------------------------------------------------------------------------------------
# Checkpoint assembly


def _layout_args(info: dict, init_kwargs: dict, name: str) -> dict[str, Any]:
    """channel_multiplier / channel_base / channel_max for which `channel_table` reproduces the pickle's channels.

    NVlabs uses min(channel_base // res, channel_max); the target uses a 512 (or channel_max) floor up to 32 px
    and channel_base * multiplier // res above. Candidates are tried in order of preference (public defaults
    first) and checked against the channels actually found in the weights.
    """
    kwargs = init_kwargs.get("synthesis_kwargs", init_kwargs) if name != "D" else init_kwargs
    nv_base, nv_max = int(kwargs.get("channel_base", 32768)), int(kwargs.get("channel_max", 512))
    layouts = [(nv_base // 16384, 16384)] if nv_base % 16384 == 0 else []
    layouts += [(2, nv_base // 2), (1, nv_base)]
    maxes = [None, nv_max] if nv_max == 512 else [nv_max]
    wanted = info["channels"]
    for multiplier, base in layouts:
        for channel_max in maxes:
            table = channel_table(multiplier, channel_max, base)
            if all(table[res] == ch for res, ch in wanted.items()):
                return {"channel_multiplier": multiplier, "channel_base": base, "channel_max": channel_max}
    raise ConversionError(f"{name}: channels per resolution {dict(sorted(wanted.items()))} cannot be expressed "
                          "by the target's channel table")


def _check_against_model(state: dict[str, torch.Tensor], model: torch.nn.Module, name: str) -> None:
    """Same keys and shapes as the target module (built on the meta device, so this costs no memory)."""
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    found = {key: tuple(value.shape) for key, value in state.items()}
    missing, unexpected = sorted(expected.keys() - found.keys()), sorted(found.keys() - expected.keys())
    wrong = sorted(key for key in expected.keys() & found.keys() if expected[key] != found[key])
    if missing or unexpected or wrong:
        details = [f"missing {missing[:5]}" * bool(missing), f"unexpected {unexpected[:5]}" * bool(unexpected),
                   "; ".join(f"{k}: {found[k]} vs {expected[k]}" for k in wrong[:5])]
        raise ConversionError(f"{name}: converted state does not match the target: "
                              + "; ".join(d for d in details if d))


def convert_networks(networks: dict[str, NVlabsNetwork], *, size: int | None = None, lr_mlp: float | None = None,
                     allow_partial: bool = False) -> dict[str, Any]:
    """Flattened NVlabs networks -> rosinality checkpoint dict (see convert_nvlabs)."""
    required = ("G_ema",) if allow_partial else NETWORK_KEYS
    missing = [key for key in required if key not in networks]
    if missing:
        raise ConversionError(f"pickle lacks network(s) {missing}" + ("" if allow_partial else
                                                                      " (use --g-ema-only for G_ema alone)"))
    g_ema, info = convert_generator(networks["G_ema"], lr_mlp)
    if size is not None and size != info["size"]:
        raise ConversionError(f"--size {size} given, but the pickle's generator is {info['size']} px")
    layout = _layout_args(info, networks["G_ema"].init_kwargs, "G_ema")
    args = {"size": info["size"], "latent": info["latent"], "n_mlp": info["n_mlp"], "lr_mlp": info["lr_mlp"],
            "blur_kernel": info["blur_kernel"], **layout}
    g_kwargs = {"channel_multiplier": layout["channel_multiplier"], "blur_kernel": info["blur_kernel"],
                    "channel_max": layout["channel_max"], "channel_base": layout["channel_base"]}
    with torch.device("meta"):
        generator = Generator(info["size"], info["latent"], info["n_mlp"], lr_mlp=info["lr_mlp"], **g_kwargs)
    _check_against_model(g_ema, generator, "G_ema")
    checkpoint: dict[str, Any] = {"g_ema": g_ema}
    if "G" in networks:
        checkpoint["g"], g_info = convert_generator(networks["G"], info["lr_mlp"])
        if {k: g_info[k] for k in ("size", "n_mlp", "latent")} != {k: info[k] for k in ("size", "n_mlp", "latent")}:
            raise ConversionError("G and G_ema have different architectures")
        _check_against_model(checkpoint["g"], generator, "G")
    if "D" in networks:
        checkpoint["d"], d_info = convert_discriminator(networks["D"])
        if d_info["size"] != info["size"]:
            raise ConversionError(f"D is {d_info['size']} px but G is {info['size']} px")
        if _layout_args(d_info, networks["D"].init_kwargs, "D") != layout:
            raise ConversionError("D and G use different channel layouts; the target shares one")
        args["stddev_group"] = d_info["stddev_group"]
        with torch.device("meta"):
            discriminator = Discriminator(info["size"], **g_kwargs, stddev_group=d_info["stddev_group"])
        _check_against_model(checkpoint["d"], discriminator, "D")
    if "mapping.w_avg" in networks["G_ema"].tensors:
        checkpoint["latent_avg"] = networks["G_ema"].tensors["mapping.w_avg"].clone()
    checkpoint["args"] = args
    return checkpoint


def convert_nvlabs(path: str | Path, *, size: int | None = None, lr_mlp: float | None = None,
                   allow_partial: bool = False) -> dict[str, Any]:
    """NVlabs snapshot pickle -> {"g_ema", "g", "d", "latent_avg", "args"} in rosinality's format.

    args holds the constructor arguments of training.stylegan2.networks (size, latent, n_mlp, lr_mlp,
    channel_multiplier, channel_base, channel_max, blur_kernel, stddev_group). With allow_partial only
    G_ema is required and "g" / "d" are present only when the pickle has them.
    """
    return convert_networks(load_nvlabs_pickle(path), size=size, lr_mlp=lr_mlp, allow_partial=allow_partial)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.stylegan2.convert", description=__doc__.split("\n")[0])
    parser.add_argument("pickle", type=Path, help="NVlabs network-snapshot-*.pkl")
    parser.add_argument("output", type=Path, help="where to write the rosinality checkpoint (.pt)")
    parser.add_argument("--size", type=int, help="expected resolution (checked against the pickle)")
    parser.add_argument("--g-ema-only", action="store_true", help="accept pickles without G and D")
    options = parser.parse_args(argv)
    try:
        checkpoint = convert_nvlabs(options.pickle, size=options.size, allow_partial=options.g_ema_only)
    except (ConversionError, CheckpointError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    options.output.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, options.output)
    print(f"wrote {options.output}: {sorted(k for k in checkpoint if k != 'args')}, args={checkpoint['args']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
