"""The fusion network against the official one (recorded outputs, tests/fixtures/fusion) and its own invariants.

Full-size cases (the official classes hard-code their sizes) share one model built once; everything else runs on
a tiny arch. Exactness is checked in float64, against the official model run in float64 at batch 1 (where
torch 2.13's norm backward bug hits) and batch 2: outputs to 1e-10, gradients to 1e-8 of each tensor's scale.
In float32, outputs and running statistics are compared at 1e-4 / 1e-5, and gradients at 3e-2 of their scale:
the float32 image gradients of this network are only good to ~2e-2 in either implementation (masknet's last
train-mode BatchNorm and ACE's InstanceNorm normalise nearly the same statistics, so the gradient between them is
a near-total cancellation; the official float32 run is 1.6-1.8e-2 off its own float64 one), and our ACE sums its
piecewise-constant style map in another order than the official dense convolution, so the two float32 runs
differ by that rounding (~9e-3) while agreeing to 1e-8 in float64.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from tests.training.fusion import parity_weights as pw
from training.fusion import network as net
from training.fusion.network import ACE, FusionArch, LocallyConnected1d, SemanticFusionNetwork, Zencoder

TINY = FusionArch(image_size=32, widths=(8, 16, 16, 32), encoder_width=4, style_length=16, spade_hidden=16,
                  w_dim=16, num_ws=4)
TINY_CANONICAL = 16


def tiny_inputs(batch: int, seed: int = 0, canonical: int = TINY_CANONICAL, arch: FusionArch = TINY
                ) -> tuple[Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    size = arch.image_size
    return (torch.rand(batch, 3, size, size, generator=gen) * 2 - 1,
            torch.rand(batch, 3, size, size, generator=gen) * 2 - 1,
            torch.rand(batch, arch.canonical_channels, canonical, canonical, generator=gen) * 2 - 1)


def tiny_model(seed: int = 0, arch: FusionArch = TINY) -> SemanticFusionNetwork:
    torch.manual_seed(seed)
    model = SemanticFusionNetwork(arch)
    with torch.no_grad():  # non-trivial BN running stats, so eval mode differs from train mode
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.uniform_(-0.1, 0.1)
            elif name.endswith("running_var"):
                buffer.uniform_(0.8, 1.2)
    return model


# ---- full size against the recorded official outputs -------------------------------------------------------


@pytest.fixture(scope="module")
def fixture() -> dict:
    return torch.load(pw.FIXTURE, weights_only=True)


@pytest.fixture(scope="module")
def full(fixture: dict) -> dict:
    """The official-size model built at the fixture's init seed (its init is checked), then the seeded weights."""
    torch.manual_seed(fixture["init_seed"])
    model = SemanticFusionNetwork()
    init = pw.sketch([(k, v) for k, v in model.state_dict().items() if v.is_floating_point()])
    keys = [(key, list(value.shape)) for key, value in model.state_dict().items()]
    seeded = pw.seeded_fusion_state(model.state_dict())
    return {"model": model, "init": init, "keys": keys, "seeded": seeded}


def _run(full: dict, batch: int, *, train: bool, grads: bool, dtype: torch.dtype = torch.float32,
         state: Mapping[str, Tensor] | None = None) -> dict:
    model = full["model"].to(dtype)
    model.load_state_dict(state or full["seeded"], strict=True)
    try:
        return pw.run_case(model, pw.make_inputs(batch), train=train, grads=grads, dtype=dtype)
    finally:
        model.float()


def _assert_scaled(got: Tensor, ref: Tensor, rel: float, what: str) -> None:
    """max |got - ref| <= rel * max |ref| (plus a floor for all-zero references)."""
    got, ref = got.double(), ref.double()
    err = float((got - ref).abs().max())
    scale = float(ref.abs().max())
    assert err <= rel * scale + 1e-9, f"{what}: max error {err:.3e} vs scale {scale:.3e} (rel {err / max(scale, 1e-30):.2e})"


# What float32 resolves of this network's gradients (module doc); exactness is the float64 tests' job.
FLOAT32_GRADIENTS = 3e-2
# Conv biases straight before an InstanceNorm: their exact gradient is 0, so float rounding is all they get.
ZERO_GRADIENT = {f"encoder.model.{i}.bias" for i in (1, 4, 7, 10)}


def _assert_grads(got: dict, ref: dict, rel: float) -> None:
    """Image gradients (block sums, projections, norms), canonical gradients and every parameter gradient's
    (sum, norm) within rel of their scale."""
    for key in ("grad_face", "grad_template"):
        for part in ("blocks", "projections", "norm"):
            _assert_scaled(got[key][part], ref[key][part], rel, f"{key}.{part}")
    _assert_scaled(got["grad_canonical"], ref["grad_canonical"], rel, "grad_canonical")
    assert got["param_names"] == ref["param_names"]
    largest = float(ref["param_grads"][:, 1].max())
    for name, (sum_got, norm_got), (sum_ref, norm_ref) in zip(ref["param_names"], got["param_grads"],
                                                              ref["param_grads"]):
        if name in ZERO_GRADIENT:
            assert norm_got <= 1e-5 * largest, f"{name} should get no gradient, got norm {float(norm_got):.3e}"
            continue
        limit = rel * float(norm_ref) + 1e-12 * largest
        assert abs(float(norm_got - norm_ref)) <= limit, f"grad norm of {name}: {float(norm_got):.6e} vs {float(norm_ref):.6e}"
        assert abs(float(sum_got - sum_ref)) <= limit, f"grad sum of {name}: {float(sum_got):.6e} vs {float(sum_ref):.6e}"


def test_state_dict_is_the_officials(full: dict, fixture: dict) -> None:
    assert full["keys"] == fixture["state_keys"]  # names, shapes and order (400 entries)
    assert len(full["keys"]) == 400


def test_fresh_model_is_initialised_as_the_official(full: dict, fixture: dict) -> None:
    names, values = full["init"]
    assert names == fixture["init_names"]
    torch.testing.assert_close(values, fixture["init_sketch"], rtol=1e-9, atol=1e-9)  # same RNG stream


def test_inputs_are_the_recorded_ones(fixture: dict) -> None:
    for batch in (1, 2):
        for key, value in pw.make_inputs(batch).items():
            ref = fixture["inputs_sketch"][f"{key}{batch}"]
            torch.testing.assert_close(torch.stack([value.double().sum(), value.double().norm()]), ref)


def test_eval_matches_official(full: dict, fixture: dict) -> None:
    got = _run(full, 2, train=False, grads=False)
    ref = fixture["cases"]["eval2"]
    torch.testing.assert_close(got["output"], ref["output"], rtol=0, atol=1e-4)
    assert got["buffer_names"] == ref["buffer_names"]
    torch.testing.assert_close(got["buffers"], ref["buffers"])
    torch.testing.assert_close(got["output"][:1], fixture["cases"]["eval1"]["output"], rtol=0, atol=1e-4)


def test_train_step_matches_official_float32(full: dict, fixture: dict) -> None:
    got = _run(full, 2, train=True, grads=True)
    ref = fixture["cases"]["train2"]
    torch.testing.assert_close(got["output"], ref["output"], rtol=0, atol=1e-4)
    # running statistics after one train-mode forward (momentum 0.1)
    torch.testing.assert_close(got["buffers"], ref["buffers"], rtol=1e-5, atol=1e-5)
    _assert_grads(got, ref, FLOAT32_GRADIENTS)


def test_train_batch2_matches_official_float64(full: dict, fixture: dict) -> None:
    got = _run(full, 2, train=True, grads=True, dtype=torch.float64)
    ref = fixture["cases"]["train2_float64"]
    torch.testing.assert_close(got["output"], ref["output"], rtol=0, atol=1e-10)
    _assert_grads(got, ref, 1e-8)


def test_train_batch1_matches_official_float64(full: dict, fixture: dict) -> None:
    """Batch 1 is where torch 2.13's CPU norm backward goes wrong (module doc of training.fusion.network); in
    float64 both implementations are exact enough to agree to 1e-8."""
    got = _run(full, 1, train=True, grads=True, dtype=torch.float64)
    ref = fixture["cases"]["train1_float64"]
    torch.testing.assert_close(got["output"], ref["output"], rtol=0, atol=1e-10)
    _assert_grads(got, ref, 1e-8)


@pytest.mark.parametrize("case,channels", [("identity_ch2_zero", (2,)), ("identity_ch12_zero", (1, 2))])
def test_lower_style_slots_match_official(full: dict, fixture: dict, case: str, channels: tuple[int, ...]) -> None:
    """ArcFace channel 2 (and 1) zero everywhere: fc_mu1 (fc_mu0) then decides ACE's style map."""
    got = _run(full, 1, train=False, grads=False, state=pw.zero_identity_channels(full["seeded"], channels))
    ref = fixture["cases"][case]["output"]
    torch.testing.assert_close(got["output"], ref, rtol=0, atol=1e-4)
    assert (ref - fixture["cases"]["eval1"]["output"]).abs().max() > 0.1  # the case is not the plain one


def test_official_loads_our_checkpoints(fixture: dict) -> None:
    assert fixture["official_loads_ours"]  # checked when the fixture was recorded (record_parity.py)


# ---- tiny archs: shapes, batch-1 gradients, the rewritten loops against plain references --------------------


@pytest.mark.parametrize("canonical", [8, 9, 16, 20])
def test_tiny_forward_shapes(canonical: int) -> None:
    model = tiny_model()
    out = model(*tiny_inputs(3, canonical=canonical))
    assert out.shape == (3, TINY.num_ws, TINY.w_dim)
    assert torch.isfinite(out).all()


def test_other_sizes_and_overrides() -> None:
    model = SemanticFusionNetwork(TINY, image_size=48, num_ws=3)
    assert model.arch == FusionArch(**{**TINY.to_json(), "image_size": 48, "num_ws": 3})
    assert model.regre.tree_connect_1[0].official_shape == (1, 16, 32, 9, 1)
    out = model(*tiny_inputs(2, arch=model.arch, canonical=24))
    assert out.shape == (2, 3, 16)


def test_rejects_wrong_inputs() -> None:
    model = tiny_model()
    face, template, canonical = tiny_inputs(2)
    with pytest.raises(ValueError, match="face_image"):
        model(face[:, :, :16, :16], template, canonical)
    with pytest.raises(ValueError, match="canonical"):
        model(face, template, canonical[:, :4])
    with pytest.raises(ValueError, match="canonical"):
        model(face, template, canonical[:, :, :4, :4])
    with pytest.raises(ValueError, match="batch sizes"):
        model(face, template[:1], canonical)


def test_arch_json_round_trip_and_validation() -> None:
    data = TINY.to_json()
    assert data["widths"] == [8, 16, 16, 32] and all(isinstance(v, (int, list)) for v in data.values())
    assert FusionArch.from_json(data) == TINY
    assert FusionArch() == FusionArch(256, 9, (64, 128, 256, 512), 32, 512, 512, 512, 14, 19)
    with pytest.raises(ValueError, match="unknown"):
        FusionArch.from_json({**data, "depth": 3})
    with pytest.raises(ValueError, match="multiple of 16"):
        FusionArch(image_size=40)
    with pytest.raises(ValueError, match="style_slots"):
        FusionArch(style_slots=2)


def _input_and_param_grads(model: SemanticFusionNetwork, inputs: tuple[Tensor, ...], cotangent: Tensor
                           ) -> tuple[list[Tensor], dict[str, Tensor]]:
    model.zero_grad(set_to_none=True)
    leaves = [x.clone().requires_grad_(True) for x in inputs]
    (model(*leaves) * cotangent).sum().backward()
    params = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return [x.grad for x in leaves], params


def test_batch1_gradients_equal_the_batch2_split(monkeypatch: pytest.MonkeyPatch) -> None:
    """In eval mode each sample's gradients are independent of its batch mates, so batch 1 must reproduce the
    batch-2 split exactly; torch 2.13's CPU norm backward breaks that at batch 1 without our contiguity guard."""
    model = tiny_model().double().eval()  # float64: the bug is there too, and rounding is out of the way
    inputs = tuple(x.double() for x in tiny_inputs(2))
    cotangent = torch.randn(2, TINY.num_ws, TINY.w_dim, generator=torch.Generator().manual_seed(3),
                            dtype=torch.float64)

    def split_mismatch() -> float:
        both, params2 = _input_and_param_grads(model, inputs, cotangent)
        worst, params1 = 0.0, {}
        for i in range(2):
            single, params = _input_and_param_grads(model, tuple(x[i:i + 1] for x in inputs), cotangent[i:i + 1])
            worst = max(worst, *(float((a[i:i + 1] - b).abs().max()) for a, b in zip(both, single)))
            params1 = {n: params1.get(n, 0) + g for n, g in params.items()}
        assert params1.keys() == params2.keys()
        return max(worst, *(float((params1[n] - params2[n]).abs().max()) for n in params2))

    assert split_mismatch() < 1e-10
    if _torch_has_the_norm_bug():  # control: without the guard the same check fails, so it tests something
        monkeypatch.setattr(net, "_contiguous", lambda grad: grad)
        assert split_mismatch() > 1e-3


def _torch_has_the_norm_bug() -> bool:
    x = torch.randn(1, 8, 4, 4, generator=torch.Generator().manual_seed(0), requires_grad=True)
    g = torch.randn(1, 4, 4, 8, generator=torch.Generator().manual_seed(1)).permute(0, 3, 1, 2)
    (a,) = torch.autograd.grad(F.instance_norm(x), x, g)
    (b,) = torch.autograd.grad(F.instance_norm(x), x, g.contiguous())
    return bool((a - b).abs().max() > 1e-4)


def test_float64_works() -> None:
    """The official ACE allocates its style map in the default dtype and fails in float64; ours follows the input."""
    model = tiny_model().double()
    out = model(*(x.double() for x in tiny_inputs(2)))
    assert out.dtype == torch.float64


# ---- the rewritten pieces against plain transcriptions of the official loops ------------------------------------


def _official_ace(ace: ACE, x: Tensor, segmap: Tensor, codes: Tensor) -> Tensor:
    """The official ACE.forward, loops and all (written from its description, dense style map)."""
    normalized = F.instance_norm(x)
    segmap = F.interpolate(segmap, size=x.shape[2:], mode="nearest")
    b, _, h, w = normalized.shape
    middle = torch.zeros(b, ace.style_length, h, w, dtype=x.dtype)
    for i in range(b):
        for j in range(codes.shape[1]):
            mask = segmap.bool()[i, j]
            if mask.sum() > 0:
                mu = F.relu(getattr(ace, f"fc_mu{j}")(codes[i][j]))
                middle[i] = torch.where(mask, mu[:, None, None], middle[i])
    gamma_avg, beta_avg = ace.conv_gamma(middle), ace.conv_beta(middle)
    actv = F.relu(ace.Spade.mlp_shared[0](segmap))
    gamma_spade, beta_spade = ace.Spade.mlp_gamma(actv), ace.Spade.mlp_beta(actv)
    ga, ba = torch.sigmoid(ace.blending_gamma), torch.sigmoid(ace.blending_beta)
    gamma = ga * gamma_avg + (1 - ga) * gamma_spade
    beta = ba * beta_avg + (1 - ba) * beta_spade
    return normalized * (1 + gamma) + beta


def _segmap(kind: str, gen: torch.Generator) -> Tensor:
    segmap = torch.randn(2, 8, 6, 6, generator=gen, dtype=torch.float64)
    if kind == "partial":  # channel 2 zero on a block, channel 1 too on part of it, channel 0 on a corner
        segmap[0, 2, :3, :4] = 0
        segmap[0, 1, :2, :2] = 0
        segmap[0, 0, 0, 0] = 0
        segmap[1, 2, 3:, :] = 0
    elif kind == "empty":  # no region at all in sample 0, only region 0 in sample 1
        segmap[0, :3] = 0
        segmap[1, 1:3] = 0
    elif kind == "none":  # no region anywhere: the style map is 0
        segmap[:, :3] = 0
    return segmap


@pytest.mark.parametrize("kind", ["full", "partial", "empty", "none"])
def test_ace_matches_the_official_loop(kind: str) -> None:
    torch.manual_seed(1)
    ace = ACE(norm_nc=8, label_nc=8, style_length=6, hidden=5, slots=19).double()
    with torch.no_grad():
        ace.blending_gamma.fill_(0.3)
        ace.blending_beta.fill_(-0.4)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 8, 6, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    codes = torch.randn(2, 3, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    segmap = _segmap(kind, gen).requires_grad_(True)
    cot = torch.randn(2, 8, 6, 6, generator=gen, dtype=torch.float64)
    results = []
    for fn in (ace, lambda *a: _official_ace(ace, *a)):
        ace.zero_grad(set_to_none=True)
        out = fn(x, segmap, codes)
        grads = torch.autograd.grad((out * cot).sum(), [x, segmap, codes, *ace.parameters()], allow_unused=True)
        results.append((out, [torch.zeros_like(p) if g is None else g for g, p in
                              zip(grads, [x, segmap, codes, *ace.parameters()])]))
    (out, grads), (ref, ref_grads) = results
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-10)


def test_ace_skips_dead_slots() -> None:
    """fc_mu3.. never matter; fc_mu0/fc_mu1 run only where channel 2 (and 1) of the segmap has zeros."""
    torch.manual_seed(1)
    ace = ACE(norm_nc=8, label_nc=8, style_length=6, hidden=5, slots=19)
    gen = torch.Generator().manual_seed(2)
    x, codes = torch.randn(2, 8, 6, 6, generator=gen), torch.randn(2, 3, 6, generator=gen)
    dense = torch.randn(2, 8, 6, 6, generator=gen)
    holed = dense.clone()
    holed[0, 2, :2, :2] = 0

    def outputs(segmap: Tensor) -> tuple[Tensor, Tensor]:
        before = ace(x, segmap, codes)
        with torch.no_grad():
            for j in (1, 5):
                getattr(ace, f"fc_mu{j}").bias.add_(1.0)
        after = ace(x, segmap, codes)
        with torch.no_grad():
            for j in (1, 5):
                getattr(ace, f"fc_mu{j}").bias.sub_(1.0)
        return before, after

    before, after = outputs(dense)
    torch.testing.assert_close(before, after, rtol=0, atol=0)  # neither fc_mu1 nor fc_mu5 counts
    ace(x, dense, codes).sum().backward()
    assert ace.fc_mu0.weight.grad is None and ace.fc_mu1.weight.grad is None and ace.fc_mu2.weight.grad is not None
    before, after = outputs(holed)
    assert (before - after).abs().max() > 1e-3  # fc_mu1 fills the hole in channel 2


def _official_zencoder_pool(codes: Tensor, segmap: Tensor) -> Tensor:
    segmap = F.interpolate(segmap, size=codes.shape[2:], mode="nearest")
    out = torch.zeros(codes.shape[0], segmap.shape[1], codes.shape[1], dtype=codes.dtype)
    for i in range(codes.shape[0]):
        for j in range(segmap.shape[1]):
            mask = segmap.bool()[i, j]
            area = int(mask.sum())
            if area > 0:
                out[i, j] = codes[i].masked_select(mask).reshape(codes.shape[1], area).mean(1)
    return out


def test_zencoder_pooling_matches_the_official_loop() -> None:
    torch.manual_seed(0)
    encoder = Zencoder(9, 7, 4).double()
    gen = torch.Generator().manual_seed(1)
    canonical = torch.randn(3, 9, 16, 16, generator=gen, dtype=torch.float64)
    face = torch.randn(3, 3, 32, 32, generator=gen, dtype=torch.float64)
    face[0, 0, :16] = 0  # half empty
    face[1, 2] = 0  # empty: zero code
    face[2, 1, ::2, ::2] = 0  # a quarter of the pixels, which nearest resizing picks
    got = encoder(canonical, face)
    ref = _official_zencoder_pool(encoder.model(canonical), face)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    assert (got[1, 2] == 0).all() and (got[2, 1] == 0).all()


def test_locally_connected_speaks_the_official_layout() -> None:
    torch.manual_seed(0)
    layer = LocallyConnected1d(5, 3, 7)
    official = layer.state_dict()["weight"]
    assert official.shape == (1, 3, 5, 7, 1) and layer.weight.shape == (7, 5, 3) and layer.weight.is_contiguous()
    x = torch.randn(2, 5, 7)
    reference = (x.unfold(2, 1, 1).unsqueeze(1) * official).sum([2, -1])  # the official forward
    torch.testing.assert_close(layer(x), reference)
    new = torch.randn(1, 3, 5, 7, 1)
    layer.load_state_dict({"weight": new})
    torch.testing.assert_close(layer.state_dict()["weight"], new, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match=r"size mismatch for weight.*\(7, 5, 3\)"):
        layer.load_state_dict({"weight": torch.zeros(7, 5, 3)})
    with pytest.raises(RuntimeError, match="Unexpected key"):
        layer.load_state_dict({"weight": new, "bias": torch.zeros(3)})
    with pytest.raises(RuntimeError, match="Missing key"):
        layer.load_state_dict({})
