"""Fusion checkpoints: ours <-> the official layout, inferred sizes, strict errors that name keys, wrong files.

That the official test.py (`DataParallel(Semantic_Fusion_Network()).load_state_dict(ckpt["model"])`) loads a
full-size checkpoint of ours was checked against the official code when the parity fixture was recorded
(tests/fixtures/fusion/README.md; test_network.test_official_loads_our_checkpoints).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.training.fusion.test_network import TINY, tiny_inputs, tiny_model
from training.common.checkpoint import CheckpointError
from training.fusion import FusionArch, fusion_state_dict, load_fusion_checkpoint, save_fusion_checkpoint
from training.fusion.checkpoint import infer_arch


def _outputs(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(*tiny_inputs(2))


def test_round_trip_ours(tmp_path: Path) -> None:
    model = tiny_model()
    path = save_fusion_checkpoint(model, tmp_path / "fusion.pt", extra={"sdgan": {"step": 7}, "optimizer": {}})
    raw = torch.load(path, weights_only=True)
    assert raw["arch"] == TINY.to_json() and raw["sdgan"] == {"step": 7} and "optimizer" in raw
    assert all(key.startswith("module.") for key in raw["model"])
    assert raw["model"]["module.regre.tree_connect_1.0.weight"].shape == (1, 16, 32, 4, 1)  # official layout
    assert all(value.is_contiguous() for value in raw["model"].values())
    loaded = load_fusion_checkpoint(path)
    assert loaded.arch == TINY
    torch.testing.assert_close(_outputs(loaded), _outputs(model), rtol=0, atol=0)
    for name, value in loaded.state_dict().items():
        torch.testing.assert_close(value, model.state_dict()[name], rtol=0, atol=0)


def test_reserved_extra_keys(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="reserved"):
        save_fusion_checkpoint(tiny_model(), tmp_path / "x.pt", extra={"model": {}})


@pytest.mark.parametrize("layout", ["official", "bare_prefixed", "bare"])
def test_official_layouts_without_arch(tmp_path: Path, layout: str) -> None:
    """checkpoint_latest.pt is {"model": DataParallel state dict} with no sizes: they come from the shapes."""
    model = tiny_model(seed=4)
    state = fusion_state_dict(model)
    if layout == "official":
        data = {"model": state, "epoch": 3}
    elif layout == "bare_prefixed":
        data = state
    else:
        data = {key.removeprefix("module."): value for key, value in state.items()}
    torch.save(data, tmp_path / "checkpoint_latest.pt")
    loaded = load_fusion_checkpoint(tmp_path / "checkpoint_latest.pt")
    assert loaded.arch == TINY
    torch.testing.assert_close(_outputs(loaded), _outputs(model), rtol=0, atol=0)


def test_infers_the_official_arch_from_shapes() -> None:
    with torch.device("meta"):
        from training.fusion import SemanticFusionNetwork

        state = SemanticFusionNetwork().state_dict()
    assert infer_arch(state) == FusionArch()


def _save_state(tmp_path: Path, state: dict) -> Path:
    path = tmp_path / "ckpt.pt"
    torch.save({"model": state}, path)
    return path


def test_misfits_name_the_keys(tmp_path: Path) -> None:
    state = fusion_state_dict(tiny_model())
    del state["module.masknet.bn1.weight"]
    state["module.fusion.extra_head.weight"] = torch.zeros(3)
    state["module.fusion.conv_gamma.bias"] = torch.zeros(5)
    with pytest.raises(CheckpointError) as info:
        load_fusion_checkpoint(_save_state(tmp_path, state))
    message = str(info.value)
    assert "1 missing ['masknet.bn1.weight']" in message
    assert "1 unexpected ['fusion.extra_head.weight']" in message
    assert "1 misshapen ['fusion.conv_gamma.bias: file (5,) vs model (32,)']" in message


def test_many_missing_keys_are_counted(tmp_path: Path) -> None:
    state = {k: v for k, v in fusion_state_dict(tiny_model()).items() if "layer3.1" not in k}
    with pytest.raises(CheckpointError, match=r"35 missing \['arcfacenet\.layer3\.1\.[^]]*\] \.\.\."):
        load_fusion_checkpoint(_save_state(tmp_path, state))
    # without the tensors the sizes are read from, there is nothing to build
    state = {k: v for k, v in fusion_state_dict(tiny_model()).items() if "regre" not in k}
    with pytest.raises(CheckpointError, match=r"missing \['regre\.tree_connect_1\.0\.weight'"):
        load_fusion_checkpoint(_save_state(tmp_path, state))


def test_arch_entry_disagreeing_with_the_tensors(tmp_path: Path) -> None:
    model = tiny_model()
    path = save_fusion_checkpoint(model, tmp_path / "x.pt")
    data = torch.load(path, weights_only=True)
    data["arch"] = {**TINY.to_json(), "w_dim": 8}
    torch.save(data, path)
    with pytest.raises(CheckpointError, match="misshapen"):
        load_fusion_checkpoint(path)
    data["arch"] = {**TINY.to_json(), "colour": "blue"}
    torch.save(data, path)
    with pytest.raises(CheckpointError, match="unreadable 'arch'"):
        load_fusion_checkpoint(path)


@pytest.mark.parametrize("content,message", [
    ({"g_ema": {"style.1.weight": torch.zeros(2)}, "g": {}, "d": {}}, "StyleGAN2"),
    ({"netD": {"network.0.weight": torch.zeros(2)}, "netA": {}}, "Unsup3d"),
    ({"model": [1, 2, 3]}, "expected a state dict"),
    ({"weights": torch.zeros(2), "step": 3}, "not a fusion network checkpoint"),
    ({"model": {"conv.weight": torch.zeros(2)}}, "not a fusion network state dict"),
    ([torch.zeros(2)], "expected a dict"),
])
def test_wrong_kinds_of_file(tmp_path: Path, content: object, message: str) -> None:
    path = tmp_path / "other.pt"
    torch.save(content, path)
    with pytest.raises(CheckpointError, match=message):
        load_fusion_checkpoint(path)


def test_truncated_and_missing_files(tmp_path: Path) -> None:
    path = save_fusion_checkpoint(tiny_model(), tmp_path / "x.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable"):
        load_fusion_checkpoint(path)
    with pytest.raises(FileNotFoundError):
        load_fusion_checkpoint(tmp_path / "absent.pt")


class _Trap:
    """Unpickling this would create a file: a weights-only load must refuse it without running it."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_only_weights_are_loaded(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    path = tmp_path / "trap.pt"
    torch.save({"model": fusion_state_dict(tiny_model()), "hook": _Trap(str(marker))}, path)
    with pytest.raises(CheckpointError, match="not allowed"):
        load_fusion_checkpoint(path)
    assert not marker.exists()


def test_loads_onto_a_device(tmp_path: Path) -> None:
    path = save_fusion_checkpoint(tiny_model(), tmp_path / "x.pt")
    model = load_fusion_checkpoint(path, device="cpu")
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert model.training  # a fresh module; callers choose eval/train
