"""Our Unsup3d networks against the official ones (elliottwu/unsup3d `unsup3d/networks.py`).

tests/fixtures/unsup3d/parity.pt holds outputs of the official small variants (nf=16, zdim=32) on seeded
weights rebuilt by name (record_parity.seeded_state), plus their state-dict key/shape lists;
celeba_state_dicts.json holds the official CelebA key/shape lists and parameter counts. See that folder's
README.md for the commit and the recording steps.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from training.unsup3d.networks import (
    CELEBA_CONFIGS,
    ConfNet,
    EDDeconv,
    Encoder,
    NetConfig,
    celeba_networks,
    count_parameters,
    infer_config,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "unsup3d"
CELEBA_PARAMS = {"netD": 12_979_648, "netA": 12_982_848, "netL": 1_739_264, "netV": 1_739_776, "netC": 7_678_208}
KINDS = {"Encoder": Encoder, "EDDeconv": EDDeconv, "ConfNet": ConfNet}


def _recorder():
    spec = importlib.util.spec_from_file_location("unsup3d_record_parity", FIXTURES / "record_parity.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RECORDER = _recorder()


def build(kind: str, kwargs: dict) -> nn.Module:
    """Ours, called exactly as the official constructors are (the same keyword arguments)."""
    return KINDS[kind](**kwargs)


@pytest.fixture(scope="module")
def fixture() -> dict:
    return torch.load(FIXTURES / "parity.pt", weights_only=True)


@pytest.fixture(scope="module")
def ours(fixture: dict) -> dict:
    return RECORDER.run_cases(build, fixture["inputs"])


def test_fixture_inputs_are_reproducible(fixture: dict) -> None:
    regenerated = RECORDER.make_inputs()
    for key, value in fixture["inputs"].items():
        assert torch.equal(regenerated[key], value), key
    assert not fixture["inputs"]["cotangent"].is_contiguous()  # the batch-1 backward case sees a permuted grad


@pytest.mark.parametrize("case", list(RECORDER.SMALL_CASES))
def test_official_state_dict_layout_loads_strictly(fixture: dict, case: str) -> None:
    kind, kwargs = RECORDER.SMALL_CASES[case]
    official = {key: torch.zeros(shape) for key, shape in fixture["state_keys"][case]}
    net = build(kind, dict(kwargs))
    assert [[k, list(v.shape)] for k, v in net.state_dict().items()] == fixture["state_keys"][case]
    net.load_state_dict(RECORDER.seeded_state(official), strict=True)


@pytest.mark.parametrize("case", list(RECORDER.SMALL_CASES))
def test_forward_equals_official(fixture: dict, ours: dict, case: str) -> None:
    expected, actual = fixture["outputs"][case], ours[case]
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected, strict=True):
        assert got.shape == want.shape
        _assert_within(got, want, 5e-5)


# Tolerances are relative to each tensor's largest value: the fixture's float32 run and ours may use different
# oneDNN kernels (recorded on an AVX-512 CPU, checked on AVX2 ones), which moves float32 results by ~1e-5 of
# their scale (measured: forward outputs 2.5e-5 at most, input gradient 6e-6, parameter gradients 8e-6).
def _assert_within(got: torch.Tensor, want: torch.Tensor, rel: float) -> None:
    scale = max(float(want.abs().max()), 1.0)
    error = float((got.double() - want.double()).abs().max())
    assert error <= rel * scale, f"max error {error:.3e} > {rel:.0e} x scale {scale:.3e}"


def test_backward_at_batch_one_equals_official(fixture: dict, ours: dict) -> None:
    expected, actual = fixture["outputs"]["backward"], ours["backward"]
    _assert_within(actual["grad_input"], expected["grad_input"], 3e-5)
    for name, grad in expected["grad_params"].items():
        _assert_within(actual["grad_params"][name], grad, 3e-5)


def test_groupnorm_backward_batch_one_noncontiguous_matches_float64() -> None:
    """The 2.13 CPU norm-backward bug concerns batch/instance norm; GroupNorm (all Unsup3d uses) must be right."""
    torch.manual_seed(0)
    norm = nn.GroupNorm(16, 64)
    nn.init.normal_(norm.weight, 1.0, 0.1)
    nn.init.normal_(norm.bias, 0.0, 0.1)
    x = torch.randn(1, 64, 8, 8)
    cotangent = torch.randn(1, 8, 8, 64).permute(0, 3, 1, 2)
    grads = []
    for dtype in (torch.float32, torch.float64):
        module = nn.GroupNorm(16, 64).to(dtype)
        module.load_state_dict({k: v.to(dtype) for k, v in norm.state_dict().items()})
        inp = x.detach().to(dtype).clone().requires_grad_(True)
        module(inp).backward(cotangent.to(dtype))
        grads.append((inp.grad, module.weight.grad, module.bias.grad))
    for got, want in zip(*grads, strict=True):
        torch.testing.assert_close(got, want.float(), rtol=1e-4, atol=1e-5)
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) for net in celeba_networks().values()
                   for m in net.modules())


def test_celeba_key_shape_lists_equal_official() -> None:
    recorded = json.loads((FIXTURES / "celeba_state_dicts.json").read_text())["networks"]
    nets = celeba_networks()
    assert list(nets) == list(recorded)
    for name, net in nets.items():
        assert [[k, list(v.shape)] for k, v in net.state_dict().items()] == recorded[name]["state"], name
        assert count_parameters(net) == recorded[name]["params"] == CELEBA_PARAMS[name], name


def test_celeba_parameter_counts() -> None:
    assert {name: count_parameters(net) for name, net in celeba_networks().items()} == CELEBA_PARAMS
    assert "netC" not in celeba_networks(with_conf=False)


@pytest.mark.parametrize("name", list(CELEBA_CONFIGS))
def test_infer_config_reads_celeba_shapes(name: str) -> None:
    net = CELEBA_CONFIGS[name].build()
    assert infer_config(name, net.state_dict()) == CELEBA_CONFIGS[name]


def test_infer_config_small_variants() -> None:
    for case, (kind, kwargs) in RECORDER.SMALL_CASES.items():
        net = build(kind, dict(kwargs))
        config = infer_config("netD" if case == "edd_depth" else "netX", net.state_dict())
        assert config.kind == kind and config.nf == kwargs["nf"] and config.zdim == kwargs.get("zdim")
        rebuilt = config.build()
        rebuilt.load_state_dict(net.state_dict(), strict=True)
        if kind == "EDDeconv":
            assert isinstance(rebuilt.network[-1], nn.Tanh) == (kwargs.get("activation", 1) is not None)


def test_output_shapes_and_ranges() -> None:
    nets = {name: config.build() for name, config in
            {"netA": NetConfig("EDDeconv", 3, 3, nf=16, zdim=32), "netL": NetConfig("Encoder", 3, 4, nf=16),
             "netC": NetConfig("ConfNet", 3, 2, nf=16, zdim=32)}.items()}
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        albedo, light, (conf64, conf16) = (nets[n](images) for n in ("netA", "netL", "netC"))
    assert albedo.shape == (2, 3, 64, 64) and albedo.abs().max() <= 1
    assert light.shape == (2, 4) and light.abs().max() <= 1
    assert conf64.shape == (2, 2, 64, 64) and conf16.shape == (2, 2, 16, 16) and conf64.min() > 0


def test_bad_width_is_refused() -> None:
    with pytest.raises(ValueError, match="multiple of 16"):
        NetConfig("EDDeconv", 3, 1, nf=24, zdim=32).build()
