"""Our StyleGAN2 against rosinality/stylegan2-pytorch, output for output, on identical seeded weights.

The golden outputs (tests/fixtures/stylegan2/parity.pt) were recorded from rosinality's model.py on CPU by
benchmarks/make_stylegan2_parity.py; the weights are not stored but rebuilt from the fixture's seed by
parity_weights.seeded_state_dict from names and shapes alone, so both implementations run on the same
tensors. Configs: 32 px (every generator case, discriminator batch 8) and 64 px (plain, mapping, backward).
Forward outputs are compared to 1e-4 in float32; gradients to 1e-3 in float32 (rounding noise) and to 1e-7
in float64 (32 px).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from tests.training.stylegan2.parity_weights import (
    discriminator_cases,
    float64_cases,
    generator_cases,
    load_seeded,
    seeded_state_dict,
)
from training.stylegan2.networks import Discriminator, Generator

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "stylegan2" / "parity.pt"
# Forward outputs in float32: 1e-4 (the two implementations differ by about 5e-6 in fact).
FORWARD = (1e-4, 1e-4)
# Gradients in float32 carry ~1e-3 relative rounding noise (rosinality float32 against rosinality float64:
# 2e-4 of the largest dL/dW entry, 4e-3 on a noise-strength gradient), so their check is looser; the tight
# backward check is the float64 one, where both implementations agree to about 1e-13.
GRADIENT = (1e-3, 1e-3)
SKETCH_FLOAT32 = 2e-2
FLOAT64 = (1e-7, 1e-9)
SKETCH_FLOAT64 = 1e-7
GRADIENT_KEYS = ("grad_w", "grad_input")
SKETCH_KEYS = ("grad_param_names", "grad_params")


@pytest.fixture(scope="module")
def fixture() -> dict:
    return torch.load(FIXTURE, weights_only=True)


def assert_matches(actual, expected, where: str, rtol: float = FORWARD[0], atol: float = FORWARD[1],
                   cap: float = 1.0) -> None:
    """actual == expected to rtol and atol * min(cap, largest |expected|); a mismatch names the output, the
    largest difference and where it is."""
    if isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor), f"{where}: got {type(actual).__name__}, expected a tensor"
        assert actual.shape == expected.shape, f"{where}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
        actual = actual.detach()
        diff = (actual - expected).abs()
        scale = min(cap, max(float(expected.abs().max()), 1e-6))
        torch.testing.assert_close(
            actual, expected, rtol=rtol, atol=atol * scale,
            msg=lambda m: f"{where}: max |diff| {diff.max():.3g} (|expected| max {expected.abs().max():.3g}) "
                          f"at {tuple(int(i) for i in torch.nonzero(diff == diff.max())[0])}\n{m}")
    elif isinstance(expected, list) and expected and isinstance(expected[0], torch.Tensor):
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_matches(a, e, f"{where}[{index}]", rtol, atol, cap)
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


def assert_grad_sketch(actual: dict, expected: dict, where: str, tol: float) -> None:
    """Per-parameter gradient (sum, norm) equal to tol * max(|sum|, norm) of the reference."""
    names = actual["grad_param_names"]
    assert names == expected["grad_param_names"], f"{where}: parameter order differs"
    for row, name in enumerate(names):
        scale = max(float(expected["grad_params"][row].abs().max()), 1e-6)
        for col, what in enumerate(("sum", "norm")):
            ours, theirs = float(actual["grad_params"][row, col]), float(expected["grad_params"][row, col])
            assert abs(ours - theirs) <= tol * scale, (
                f"{where}: grad {what} of {name}: ours {ours:.8g}, rosinality {theirs:.8g} "
                f"(diff {abs(ours - theirs):.3g}, allowed {tol * scale:.3g})")


def compare_outputs(actual: dict, expected: dict, where: str, *, float64: bool = False) -> None:
    assert set(actual) >= set(expected), f"{where}: missing outputs {sorted(set(expected) - set(actual))}"
    for key, value in expected.items():
        if key in SKETCH_KEYS:
            continue
        if float64:
            assert_matches(actual[key], value, f"{where} {key}", *FLOAT64, cap=float("inf"))
        elif key in GRADIENT_KEYS:  # tolerance relative to the largest entry: a gradient has no natural unit
            assert_matches(actual[key], value, f"{where} {key}", *GRADIENT, cap=float("inf"))
        else:
            assert_matches(actual[key], value, f"{where} {key}", *FORWARD)
    assert_grad_sketch(actual, expected, where, SKETCH_FLOAT64 if float64 else SKETCH_FLOAT32)


def build(entry: dict, seed: int) -> tuple[Generator, Discriminator]:
    g = load_seeded(Generator(**entry["config"]["generator"]), seed)
    d = load_seeded(Discriminator(**entry["config"]["discriminator"]), seed)
    return g, d


def test_fixture_is_small_and_safe(fixture: dict) -> None:
    assert FIXTURE.stat().st_size < 1024 * 1024
    assert fixture["format"] == 1 and set(fixture["configs"]) == {"s32", "s64"}


def test_seeded_weights_depend_on_name_and_shape_only() -> None:
    ref = {"a.weight": torch.zeros(3, 4), "b.blur.kernel": torch.arange(16.0).view(4, 4)}
    one = seeded_state_dict(ref, 7)
    two = seeded_state_dict({"a.weight": torch.Size([3, 4]), "b.blur.kernel": ref["b.blur.kernel"] * 1}, 7)
    assert torch.equal(one["a.weight"], two["a.weight"]) and torch.equal(one["b.blur.kernel"], ref["b.blur.kernel"])
    assert not torch.equal(one["a.weight"], seeded_state_dict(ref, 8)["a.weight"])


@pytest.mark.parametrize("config", ["s32", "s64"])
def test_state_dict_layout(fixture: dict, config: str) -> None:
    entry = fixture["configs"][config]
    g, d = build(entry, fixture["seed"])
    for part, model in (("g", g), ("d", d)):
        ours = {k: list(v.shape) for k, v in model.state_dict().items()}
        theirs = entry["state_dict_shapes"][part]
        assert ours == theirs, (f"{config} {part}: missing {sorted(set(theirs) - set(ours))}, unexpected "
                                f"{sorted(set(ours) - set(theirs))}, shapes "
                                f"{[k for k in ours if k in theirs and ours[k] != theirs[k]]}")
        assert list(ours) == list(theirs), f"{config} {part}: key order differs"
    buffers = {f"g.{k}": v for k, v in g.state_dict().items() if "kernel" in k}
    buffers.update({f"d.{k}": v for k, v in d.state_dict().items() if "kernel" in k})
    assert set(buffers) == set(entry["kernels"])
    for name, kernel in entry["kernels"].items():
        assert_matches(buffers[name], kernel, f"{config} kernel {name}")


@pytest.mark.parametrize("config", ["s32", "s64"])
def test_generator_parity(fixture: dict, config: str) -> None:
    entry = fixture["configs"][config]
    g, _ = build(entry, fixture["seed"])
    actual = generator_cases(g, entry["inputs"], full=entry["config"]["full"])
    assert set(actual) == set(entry["outputs"]["g"])
    compare_outputs(actual, entry["outputs"]["g"], f"{config} G")


@pytest.mark.parametrize("config", ["s32", "s64"])
def test_discriminator_parity(fixture: dict, config: str) -> None:
    entry = fixture["configs"][config]
    _, d = build(entry, fixture["seed"])
    actual = discriminator_cases(d, entry["inputs"])
    assert set(actual) == set(entry["outputs"]["d"])
    compare_outputs(actual, entry["outputs"]["d"], f"{config} D")


def test_backward_parity_float64(fixture: dict) -> None:
    """Mapping, logits, dL/dW and every parameter's gradient in float64, to 1e-7 (32 px config)."""
    config = "s32"
    entry = fixture["configs"][config]
    g, d = build(entry, fixture["seed"])
    actual = float64_cases(g, d, entry["inputs"])
    for part in ("g", "d"):
        compare_outputs(actual[part], entry["outputs_float64"][part], f"{config} {part.upper()} float64",
                        float64=True)


def test_rosinality_layout_checkpoint_loads(fixture: dict, tmp_path: Path) -> None:
    """A checkpoint as rosinality's train.py writes it (args as an argparse.Namespace, Adam states) loads
    with weights_only=True and rebuilds a generator and discriminator that still match the golden outputs."""
    checkpoint_mod = pytest.importorskip("training.stylegan2.checkpoint")
    entry = fixture["configs"]["s32"]
    g, d = build(entry, fixture["seed"])
    g_ema, _ = build(entry, fixture["seed"])
    optims = {}
    for name, model in (("g_optim", g), ("d_optim", d)):
        optim = torch.optim.Adam(model.parameters(), lr=0.002, betas=(0.0, 0.99))
        optims[name] = optim.state_dict()  # before any step: the live weights stay the seeded ones
    optims["g_optim"]["state"] = {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(2),
                                      "exp_avg_sq": torch.ones(2)}}
    args = argparse.Namespace(size=32, latent=64, n_mlp=2, channel_multiplier=1, r1=10.0, path_regularize=2,
                              augment=True, ada_target=0.6, lr=0.002, iter=800000, batch=16, ckpt=None)
    path = tmp_path / "rosinality.pt"
    torch.save({"g": g.state_dict(), "d": d.state_dict(), "g_ema": g_ema.state_dict(), **optims, "args": args,
                "ada_aug_p": 0.125}, path)

    loaded = checkpoint_mod.load_checkpoint(path)
    assert set(loaded) == {"g", "d", "g_ema", "g_optim", "d_optim", "args", "ada_aug_p"}
    assert isinstance(loaded["args"], argparse.Namespace) and loaded["args"].channel_multiplier == 1
    assert loaded["ada_aug_p"] == 0.125 and loaded["g_optim"]["state"][0]["step"].item() == 3.0
    for key in ("g", "d", "g_ema"):
        reference = {"g": g, "d": d, "g_ema": g_ema}[key].state_dict()
        assert all(torch.equal(loaded[key][k], v) for k, v in reference.items())

    rebuilt_g = checkpoint_mod.generator_from_checkpoint(loaded)
    rebuilt_d = checkpoint_mod.discriminator_from_checkpoint(loaded)
    inputs = entry["inputs"]
    with torch.no_grad():
        image, _ = rebuilt_g([inputs["z1"]], noise=list(inputs["noise"]), randomize_noise=False)
        logits = rebuilt_d(inputs["d_images"])
    assert_matches(image, entry["outputs"]["g"]["plain_image"], "checkpoint g_ema plain_image")
    assert_matches(logits, entry["outputs"]["d"]["logits"], "checkpoint d logits")
