"""NVlabs pickle -> rosinality checkpoint conversion, tested without any real NVlabs file or code.

A fake `torch_utils.persistence` (written to a temp dir and importable only while pickling) gives modules the
same `__reduce__` as NVlabs' persistent classes. Small NVlabs-shaped G / D trees (exact parameter, buffer and
attribute names) are pickled, converted, loaded strictly into our networks, and compared numerically against
a reference forward pass written here from NVlabs' semantics (its generic resampling path, the unfused
modulated convolution, bias_act with gains and clamping), which computes in a different order than ours.
"""

from __future__ import annotations

import importlib
import math
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from training.stylegan2.convert import (
    ConversionError,
    UnsupportedPickleError,
    convert_networks,
    convert_nvlabs,
    load_nvlabs_pickle,
    main,
)
from training.stylegan2.networks import Discriminator, Generator

SIZE, W_DIM, N_MLP, LR_MLP, CHANNEL_BASE, CHANNEL_MAX, CLAMP = 64, 32, 2, 0.01, 512, 16, 256.0
FILTER_TAPS = [1.0, 3.0, 3.0, 1.0]

PERSISTENCE_SRC = '''
import torch

def _reconstruct_persistent_obj(meta):
    raise RuntimeError("the fake persistence module must never be used for loading")

class Persistent(torch.nn.Module):
    """Pickles like torch_utils.persistence: reduce to _reconstruct_persistent_obj(meta) carrying source + state."""
    _orig_class_name = "Persistent"
    _orig_module_src = ""

    def __init__(self, **init_kwargs):
        super().__init__()
        self._init_args = ()
        self._init_kwargs = dict(init_kwargs)

    def __reduce__(self):
        meta = dict(type="class", version=6, module_src=self._orig_module_src, class_name=self._orig_class_name,
                    state=dict(self.__dict__))
        return (_reconstruct_persistent_obj, (meta,), None)

def persistent(class_name, module_src):
    return type(class_name, (Persistent,), {"_orig_class_name": class_name, "_orig_module_src": module_src})
'''
EASYDICT_SRC = '''
class EasyDict(dict):
    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name)
'''


class Fakes:
    """Handles on the fake NVlabs modules while they are importable."""

    def __init__(self, marker: Path):
        self.persistence = importlib.import_module("torch_utils.persistence")
        self.easydict = importlib.import_module("dnnlib.util").EasyDict
        # Executing this "module source" would create the marker file: the converter must never do it.
        self.module_src = f"open({str(marker)!r}, 'w').write('module_src was executed')\n"

    def make(self, class_name: str, **init_kwargs) -> nn.Module:
        return self.persistence.persistent(class_name, self.module_src)(**init_kwargs)


def _install_fake_packages(root: Path) -> None:
    (root / "torch_utils").mkdir(parents=True, exist_ok=True)
    (root / "torch_utils" / "__init__.py").write_text("")
    (root / "torch_utils" / "persistence.py").write_text(PERSISTENCE_SRC)
    (root / "dnnlib").mkdir(exist_ok=True)
    (root / "dnnlib" / "__init__.py").write_text("from dnnlib.util import EasyDict\n")
    (root / "dnnlib" / "util.py").write_text(EASYDICT_SRC)


def _forget_fake_packages(root: Path) -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in ("torch_utils", "dnnlib"):
            del sys.modules[name]
    while str(root) in sys.path:
        sys.path.remove(str(root))
    importlib.invalidate_caches()


# ----------------------------------------------------------------------------------------------------------------
# NVlabs-shaped module trees (names and attributes as in stylegan2-ada-pytorch training/networks.py)


def _filter() -> torch.Tensor:
    taps = torch.tensor(FILTER_TAPS)
    kernel = taps[:, None] * taps[None, :]
    return kernel / kernel.sum()


def _fc(fk: Fakes, in_f: int, out_f: int, activation: str = "linear", lr: float = 1.0, bias_init: float = 0.0):
    m = fk.make("FullyConnectedLayer", in_features=in_f, out_features=out_f, activation=activation)
    m.activation = activation
    m.weight = nn.Parameter(torch.randn(out_f, in_f) / lr)
    m.bias = nn.Parameter(torch.full([out_f], np.float32(bias_init)) + 0.2 * torch.randn(out_f))
    m.weight_gain = lr / np.sqrt(in_f)
    m.bias_gain = lr
    return m


def _conv(fk: Fakes, cin: int, cout: int, k: int, activation: str = "linear", bias: bool = True, down: int = 1):
    m = fk.make("Conv2dLayer", in_channels=cin, out_channels=cout, kernel_size=k)
    m.activation, m.up, m.down, m.conv_clamp = activation, 1, down, CLAMP
    m.register_buffer("resample_filter", _filter())
    m.padding = k // 2
    m.weight_gain = 1 / np.sqrt(cin * k * k)
    m.act_gain = np.sqrt(2) if activation == "lrelu" else 1.0
    m.weight = nn.Parameter(torch.randn(cout, cin, k, k))
    m.bias = nn.Parameter(0.2 * torch.randn(cout)) if bias else None
    return m


def _synthesis_layer(fk: Fakes, cin: int, cout: int, res: int, up: int):
    m = fk.make("SynthesisLayer", in_channels=cin, out_channels=cout, w_dim=W_DIM, resolution=res, up=up)
    m.resolution, m.up, m.use_noise, m.activation, m.conv_clamp = res, up, True, "lrelu", CLAMP
    m.register_buffer("resample_filter", _filter())
    m.padding = 1
    m.act_gain = np.sqrt(2)
    m.affine = _fc(fk, W_DIM, cin, bias_init=1)
    m.weight = nn.Parameter(torch.randn(cout, cin, 3, 3))
    m.register_buffer("noise_const", torch.randn(res, res))
    m.noise_strength = nn.Parameter(0.3 * torch.randn([]))
    m.bias = nn.Parameter(0.2 * torch.randn(cout))
    return m


def _to_rgb(fk: Fakes, cin: int):
    m = fk.make("ToRGBLayer", in_channels=cin, out_channels=3, w_dim=W_DIM)
    m.conv_clamp = CLAMP
    m.affine = _fc(fk, W_DIM, cin, bias_init=1)
    m.weight = nn.Parameter(torch.randn(3, cin, 1, 1))
    m.bias = nn.Parameter(0.2 * torch.randn(3))
    m.weight_gain = 1 / np.sqrt(cin)
    return m


def nv_channels(res: int) -> int:
    return min(CHANNEL_BASE // res, CHANNEL_MAX)


def build_generator(fk: Fakes, c_dim: int = 0):
    ed = fk.easydict
    g = fk.make("Generator", z_dim=W_DIM, c_dim=c_dim, w_dim=W_DIM, img_resolution=SIZE, img_channels=3,
                mapping_kwargs=ed(num_layers=N_MLP),
                synthesis_kwargs=ed(channel_base=CHANNEL_BASE, channel_max=CHANNEL_MAX, num_fp16_res=2,
                                    conv_clamp=int(CLAMP)))
    g.z_dim, g.c_dim, g.w_dim, g.img_resolution, g.img_channels = W_DIM, c_dim, W_DIM, SIZE, 3
    syn = fk.make("SynthesisNetwork", w_dim=W_DIM, img_resolution=SIZE, img_channels=3)
    syn.w_dim, syn.img_resolution, syn.img_channels = W_DIM, SIZE, 3
    syn.block_resolutions = [2**i for i in range(2, int(math.log2(SIZE)) + 1)]
    syn.num_ws = 0
    for res in syn.block_resolutions:
        cin, cout = (nv_channels(res // 2) if res > 4 else 0), nv_channels(res)
        block = fk.make("SynthesisBlock", in_channels=cin, out_channels=cout, resolution=res)
        block.in_channels, block.w_dim, block.resolution, block.img_channels = cin, W_DIM, res, 3
        block.is_last, block.architecture, block.use_fp16, block.channels_last = res == SIZE, "skip", res >= 32, False
        block.register_buffer("resample_filter", _filter())
        if cin == 0:
            block.const = nn.Parameter(torch.randn(cout, res, res))
        else:
            block.conv0 = _synthesis_layer(fk, cin, cout, res, up=2)
        block.conv1 = _synthesis_layer(fk, cout, cout, res, up=1)
        block.torgb = _to_rgb(fk, cout)
        block.num_conv, block.num_torgb = (1 if cin == 0 else 2), 1
        syn.num_ws += block.num_conv + (block.num_torgb if res == SIZE else 0)
        setattr(syn, f"b{res}", block)
    g.synthesis, g.num_ws = syn, syn.num_ws
    mapping = fk.make("MappingNetwork", z_dim=W_DIM, c_dim=c_dim, w_dim=W_DIM, num_ws=syn.num_ws)
    mapping.z_dim, mapping.c_dim, mapping.w_dim, mapping.num_ws = W_DIM, c_dim, W_DIM, syn.num_ws
    mapping.num_layers, mapping.w_avg_beta = N_MLP, 0.995
    if c_dim:
        mapping.embed = _fc(fk, c_dim, W_DIM)
    for index in range(N_MLP):
        in_f = W_DIM * (2 if c_dim and index == 0 else 1)
        setattr(mapping, f"fc{index}", _fc(fk, in_f, W_DIM, activation="lrelu", lr=LR_MLP))
    mapping.register_buffer("w_avg", 0.5 * torch.randn(W_DIM))
    g.mapping = mapping
    return g


def build_discriminator(fk: Fakes):
    ed = fk.easydict
    d = fk.make("Discriminator", c_dim=0, img_resolution=SIZE, img_channels=3, architecture="resnet",
                channel_base=CHANNEL_BASE, channel_max=CHANNEL_MAX, num_fp16_res=2, conv_clamp=int(CLAMP),
                block_kwargs=ed(), mapping_kwargs=ed(), epilogue_kwargs=ed(mbstd_group_size=4))
    d.c_dim, d.img_resolution, d.img_channels = 0, SIZE, 3
    d.block_resolutions = [2**i for i in range(int(math.log2(SIZE)), 2, -1)]
    for res in d.block_resolutions:
        tmp, out = nv_channels(res), nv_channels(res // 2)
        block = fk.make("DiscriminatorBlock", in_channels=0 if res == SIZE else tmp, tmp_channels=tmp,
                        out_channels=out, resolution=res)
        block.in_channels, block.resolution, block.architecture = (0 if res == SIZE else tmp), res, "resnet"
        block.use_fp16 = res >= 32
        block.register_buffer("resample_filter", _filter())
        if res == SIZE:
            block.fromrgb = _conv(fk, 3, tmp, 1, "lrelu")
        block.conv0 = _conv(fk, tmp, tmp, 3, "lrelu")
        block.conv1 = _conv(fk, tmp, out, 3, "lrelu", down=2)
        block.skip = _conv(fk, tmp, out, 1, bias=False, down=2)
        setattr(d, f"b{res}", block)
    ch = nv_channels(4)
    epi = fk.make("DiscriminatorEpilogue", in_channels=ch, cmap_dim=0, resolution=4, img_channels=3)
    epi.in_channels, epi.cmap_dim, epi.resolution, epi.architecture = ch, 0, 4, "resnet"
    epi.mbstd = fk.make("MinibatchStdLayer", group_size=4, num_channels=1)
    epi.mbstd.group_size, epi.mbstd.num_channels = 4, 1
    epi.conv = _conv(fk, ch + 1, ch, 3, "lrelu")
    epi.fc = _fc(fk, ch * 16, ch, activation="lrelu")
    epi.out = _fc(fk, ch, 1)
    d.b4 = epi
    return d


def build_augment_pipe(fk: Fakes):
    pipe = fk.make("AugmentPipe", xflip=1)
    pipe.register_buffer("p", torch.zeros([]))
    pipe.identity = nn.Identity()  # a plain torch.nn submodule: must load as a stub too
    return pipe


# ----------------------------------------------------------------------------------------------------------------
# Reference forward with NVlabs semantics


def ref_upfirdn2d(x, f, up=1, down=1, pad=(0, 0), gain=1.0):
    if up > 1:
        n, c, h, w = x.shape
        x = F.pad(x.reshape(n, c, h, 1, w, 1), [0, up - 1, 0, 0, 0, up - 1]).reshape(n, c, h * up, w * up)
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    kernel = (f * gain).flip([0, 1])[None, None].repeat(x.shape[1], 1, 1, 1)
    return F.conv2d(x, kernel, groups=x.shape[1])[:, :, ::down, ::down]


def ref_conv2d_resample(x, w, f, up=1, down=1, padding=0, flip_weight=True):
    """NVlabs' generic path: pad (+ upsample and filter), convolve, then filter + subsample."""
    if not flip_weight:
        w = w.flip([2, 3])
    if up == 1 and down == 1:
        return F.conv2d(x, w, padding=padding)
    fw = f.shape[-1]
    p0 = padding + ((fw + up - 1) // 2 if up > 1 else 0) + ((fw - down + 1) // 2 if down > 1 else 0)
    p1 = padding + ((fw - up) // 2 if up > 1 else 0) + ((fw - down) // 2 if down > 1 else 0)
    x = ref_upfirdn2d(x, f, up=up, pad=(p0, p1), gain=up**2) if up > 1 else F.pad(x, [p0, p1, p0, p1])
    x = F.conv2d(x, w)
    return ref_upfirdn2d(x, f, down=down) if down > 1 else x


def ref_bias_act(x, b, act, gain, clamp):
    if b is not None:
        x = x + b.reshape([1, -1] + [1] * (x.ndim - 2))
    if act == "lrelu":
        x = F.leaky_relu(x, 0.2)
    x = x * gain
    return x.clamp(-clamp, clamp) if clamp is not None else x


def ref_fc(m, x):
    x = x @ (m.weight * m.weight_gain).t()
    return ref_bias_act(x, m.bias * m.bias_gain, m.activation, math.sqrt(2) if m.activation == "lrelu" else 1, None)


def ref_conv_layer(m, x, gain=1.0):
    x = ref_conv2d_resample(x, m.weight * m.weight_gain, m.resample_filter, m.up, m.down, m.padding, m.up == 1)
    return ref_bias_act(x, m.bias, m.activation, m.act_gain * gain, m.conv_clamp * gain)


def ref_modulated_conv(x, weight, styles, noise=None, up=1, padding=0, f=None, demodulate=True):
    if demodulate:
        dcoefs = ((weight[None] * styles[:, None, :, None, None]).square().sum([2, 3, 4]) + 1e-8).rsqrt()
    x = x * styles[:, :, None, None]
    x = ref_conv2d_resample(x, weight, f, up=up, padding=padding, flip_weight=(up == 1))
    if demodulate:
        x = x * dcoefs[:, :, None, None]
    return x + noise if noise is not None else x


def ref_synthesis_layer(m, x, w):
    noise = m.noise_const * m.noise_strength
    x = ref_modulated_conv(x, m.weight, ref_fc(m.affine, w), noise, m.up, m.padding, m.resample_filter)
    return ref_bias_act(x, m.bias, "lrelu", m.act_gain, m.conv_clamp)


def ref_torgb(m, x, w):
    x = ref_modulated_conv(x, m.weight, ref_fc(m.affine, w) * m.weight_gain, demodulate=False)
    return ref_bias_act(x, m.bias, "linear", 1.0, m.conv_clamp)


def ref_generator(g, z, psi=1.0):
    mapping, syn = g.mapping, g.synthesis
    x = z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
    for index in range(mapping.num_layers):
        x = ref_fc(getattr(mapping, f"fc{index}"), x)
    ws = x.unsqueeze(1).repeat(1, mapping.num_ws, 1)
    ws = mapping.w_avg.lerp(ws, psi) if psi != 1 else ws
    x = img = None
    w_idx = 0
    for res in syn.block_resolutions:
        block = getattr(syn, f"b{res}")
        cur = ws[:, w_idx:w_idx + block.num_conv + block.num_torgb]
        w_idx += block.num_conv
        if block.in_channels == 0:
            x = ref_synthesis_layer(block.conv1, block.const[None].repeat(z.shape[0], 1, 1, 1), cur[:, 0])
        else:
            x = ref_synthesis_layer(block.conv0, x, cur[:, 0])
            x = ref_synthesis_layer(block.conv1, x, cur[:, 1])
        if img is not None:
            img = ref_upfirdn2d(img, block.resample_filter, up=2, pad=(2, 1), gain=4)
        y = ref_torgb(block.torgb, x, cur[:, block.num_conv])
        img = img + y if img is not None else y
    return img


def ref_discriminator(d, img):
    x = None
    for res in d.block_resolutions:
        block = getattr(d, f"b{res}")
        if block.in_channels == 0:
            x = ref_conv_layer(block.fromrgb, img)
        y = ref_conv_layer(block.skip, x, gain=np.sqrt(0.5))
        x = ref_conv_layer(block.conv1, ref_conv_layer(block.conv0, x), gain=np.sqrt(0.5))
        x = y + x
    epi = d.b4
    n, c, h, w = x.shape
    group, feats = min(epi.mbstd.group_size, n), epi.mbstd.num_channels
    y = x.reshape(group, -1, feats, c // feats, h, w)
    y = ((y - y.mean(dim=0)).square().mean(dim=0) + 1e-8).sqrt().mean(dim=[2, 3, 4])
    x = torch.cat([x, y.reshape(-1, feats, 1, 1).repeat(group, 1, h, w)], dim=1)
    x = ref_conv_layer(epi.conv, x)
    return ref_fc(epi.out, ref_fc(epi.fc, x.flatten(1)))


# ----------------------------------------------------------------------------------------------------------------
# Fixtures


class Built:
    def __init__(self, path: Path, marker: Path, g_ema, d, conditional_path: Path):
        self.path, self.marker, self.g_ema, self.d, self.conditional_path = path, marker, g_ema, d, conditional_path


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Built:
    root = tmp_path_factory.mktemp("nvlabs")
    marker = root / "EXECUTED"
    _install_fake_packages(root / "src")
    sys.path.insert(0, str(root / "src"))
    try:
        fk = Fakes(marker)
        torch.manual_seed(0)
        g, g_ema, d = build_generator(fk), build_generator(fk), build_discriminator(fk)
        snapshot = {"G": g, "D": d, "G_ema": g_ema, "augment_pipe": build_augment_pipe(fk),
                        "training_set_kwargs": fk.easydict(path="x.zip", resolution=np.int64(SIZE), xflip=False)}
        path = root / "network-snapshot-000000.pkl"
        with open(path, "wb") as handle:
            pickle.dump(snapshot, handle, protocol=4)
        with open(root / "protocol2.pkl", "wb") as handle:  # Python-2 module names, bytes via _codecs.encode
            pickle.dump({"G_ema": g_ema}, handle, protocol=2)
        conditional = {"G": build_generator(fk, c_dim=4), "D": d, "G_ema": build_generator(fk, c_dim=4)}
        conditional_path = root / "conditional.pkl"
        with open(conditional_path, "wb") as handle:
            pickle.dump(conditional, handle, protocol=3)
    finally:
        _forget_fake_packages(root / "src")
    return Built(path, marker, g_ema, d, conditional_path)


@pytest.fixture(scope="module")
def checkpoint(built) -> dict:
    return convert_nvlabs(built.path)


def _generator(args: dict) -> Generator:
    return Generator(args["size"], args["latent"], args["n_mlp"], args["channel_multiplier"], args["blur_kernel"],
                     args["lr_mlp"], channel_max=args["channel_max"], channel_base=args["channel_base"])


def _discriminator(args: dict) -> Discriminator:
    return Discriminator(args["size"], args["channel_multiplier"], args["blur_kernel"], channel_max=args["channel_max"],
                         channel_base=args["channel_base"], stddev_group=args["stddev_group"])


# ----------------------------------------------------------------------------------------------------------------
# Tests


def test_load_reads_stubs_without_running_module_source(built):
    networks = load_nvlabs_pickle(built.path)
    assert sorted(networks) == ["D", "G", "G_ema"]
    g = networks["G_ema"]
    assert g.class_name == "Generator" and g.classes["synthesis.b8.conv0"] == "SynthesisLayer"
    assert g.init_kwargs["synthesis_kwargs"] == {"channel_base": CHANNEL_BASE, "channel_max": CHANNEL_MAX,
                                                 "num_fp16_res": 2, "conv_clamp": int(CLAMP)}
    assert tuple(g.tensors["synthesis.b64.conv0.weight"].shape) == (8, 16, 3, 3)
    assert g.attrs["mapping.fc0.bias_gain"] == LR_MLP
    torch.testing.assert_close(g.tensors["mapping.w_avg"], built.g_ema.mapping.w_avg)
    assert not built.marker.exists()


def test_protocol_2_pickles_load_the_same(built):
    old = load_nvlabs_pickle(built.path.parent / "protocol2.pkl")["G_ema"]
    new = load_nvlabs_pickle(built.path)["G_ema"]
    assert old.tensors.keys() == new.tensors.keys()
    assert all(torch.equal(old.tensors[key], new.tensors[key]) for key in new.tensors)


def test_checkpoint_loads_strictly(checkpoint):
    args = checkpoint["args"]
    assert args == {"size": SIZE, "latent": W_DIM, "n_mlp": N_MLP, "lr_mlp": LR_MLP, "blur_kernel": [1, 3, 3, 1],
                    "channel_multiplier": 2, "channel_base": 256, "channel_max": CHANNEL_MAX, "stddev_group": 4}
    for key in ("g", "g_ema"):
        _generator(args).load_state_dict(checkpoint[key], strict=True)
    _discriminator(args).load_state_dict(checkpoint["d"], strict=True)
    assert checkpoint["latent_avg"].shape == (W_DIM,)


def test_tensor_mapping_by_hand(built, checkpoint):
    g, nv = checkpoint["g_ema"], built.g_ema
    torch.testing.assert_close(g["style.1.weight"], nv.mapping.fc0.weight.detach(), rtol=0, atol=0)
    torch.testing.assert_close(g["input.input"], nv.synthesis.b4.const.detach()[None])
    layer = nv.synthesis.b8.conv0
    torch.testing.assert_close(g["convs.0.conv.weight"], layer.weight.detach()[None] * math.sqrt(16 * 9))
    torch.testing.assert_close(g["convs.0.conv.modulation.bias"], layer.affine.bias.detach())
    torch.testing.assert_close(g["convs.0.noise.weight"], layer.noise_strength.detach().reshape(1))
    torch.testing.assert_close(g["noises.noise_1"], layer.noise_const[None, None])
    assert g["to_rgb1.bias"].shape == (1, 3, 1, 1) and g["conv1.conv.weight"].shape == (1, 16, 16, 3, 3)
    upsampling = torch.tensor([[1.0, 3, 3, 1]]).t() @ torch.tensor([[1.0, 3, 3, 1]]) / 64 * 4
    torch.testing.assert_close(g["to_rgbs.0.upsample.kernel"], upsampling)
    torch.testing.assert_close(checkpoint["d"]["convs.1.skip.0.kernel"], upsampling / 4)
    torch.testing.assert_close(checkpoint["d"]["final_linear.1.bias"], built.d.b4.out.bias.detach())


@torch.no_grad()
def test_generator_matches_nvlabs_semantics(built, checkpoint):
    model = _generator(checkpoint["args"]).eval()
    model.load_state_dict(checkpoint["g_ema"], strict=True)
    z = torch.randn(3, W_DIM)
    expected = ref_generator(built.g_ema, z)
    image, _ = model([z], randomize_noise=False)
    assert image.shape == (3, 3, SIZE, SIZE)
    torch.testing.assert_close(image, expected, rtol=1e-4, atol=1e-4)
    truncated, _ = model([z], randomize_noise=False, truncation=0.6, truncation_latent=checkpoint["latent_avg"])
    torch.testing.assert_close(truncated, ref_generator(built.g_ema, z, psi=0.6), rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_discriminator_matches_nvlabs_semantics(built, checkpoint):
    model = _discriminator(checkpoint["args"]).eval()
    model.load_state_dict(checkpoint["d"], strict=True)
    images = torch.randn(8, 3, SIZE, SIZE)
    # D logits are small (about 0.05 here), so the absolute tolerance is tighter than for images.
    torch.testing.assert_close(model(images), ref_discriminator(built.d, images), rtol=1e-4, atol=1e-5)


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_forbidden_global_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": {"_modules": [_Evil(marker)]}}))
    with pytest.raises(UnsupportedPickleError, match="system"):
        load_nvlabs_pickle(path)
    assert not marker.exists()


def test_conditional_pickle_is_rejected(built):
    with pytest.raises(ConversionError, match="c_dim=4"):
        convert_nvlabs(built.conditional_path)


def test_other_architectures_are_rejected(built):
    networks = load_nvlabs_pickle(built.path)
    networks["D"].attrs[f"b{SIZE}.architecture"] = "skip"
    with pytest.raises(ConversionError, match="resnet"):
        convert_networks(networks)
    networks = load_nvlabs_pickle(built.path)
    del networks["D"]
    with pytest.raises(ConversionError, match="lacks network"):
        convert_networks(networks)
    assert set(convert_networks(networks, allow_partial=True)) == {"g", "g_ema", "latent_avg", "args"}


def test_cli_writes_a_weights_only_checkpoint(built, tmp_path, capsys):
    out = tmp_path / "converted.pt"
    assert main([str(built.path), str(out), "--size", str(SIZE)]) == 0
    loaded = torch.load(out, weights_only=True)
    assert set(loaded) == {"g", "d", "g_ema", "latent_avg", "args"}
    assert main([str(built.path), str(tmp_path / "x.pt"), "--size", "128"]) == 2
    assert "--size 128" in capsys.readouterr().err
