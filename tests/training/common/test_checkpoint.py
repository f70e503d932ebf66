"""Generic checkpoint I/O: weights-only loading with clear errors, atomic saves, strict state loading, and the
restricted unpickler for foreign pickles (nothing named by a pickle is imported or run)."""

from __future__ import annotations

import argparse
import io
import os
import pickle
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from training.common.checkpoint import (
    CheckpointError,
    PickledStub,
    RestrictedUnpickler,
    UnsupportedPickleError,
    load_checkpoint,
    load_foreign_pickle,
    load_state_strict,
    save_checkpoint,
)


class _Evil:
    """Unpickling this with a plain pickle.load would run `touch <marker>`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _system_name() -> str:
    return f"{os.system.__module__}.system"  # posix.system on Linux


# ---------------------------------------------------------------------------------------------- our checkpoints


def test_save_and_load_round_trip_without_temp_files(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "sub" / "ckpt.pt", {"w": torch.arange(4.0), "step": 3})
    loaded = load_checkpoint(path)
    assert loaded["step"] == 3 and torch.equal(loaded["w"], torch.arange(4.0))
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.pt"]


def test_extra_classes_load_only_when_allowed(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "a.pt", {"args": argparse.Namespace(size=16)})
    with pytest.raises(CheckpointError, match=r"a\.pt.*argparse\.Namespace.*nothing was executed"):
        load_checkpoint(path)
    assert load_checkpoint(path, allowed_globals=[argparse.Namespace])["args"].size == 16


def test_a_hostile_checkpoint_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for name, data in (("zip.pt", None), ("raw.pt", pickle.dumps({"g": _Evil(marker)}))):
        path = tmp_path / name
        if data is None:
            torch.save({"g": _Evil(marker)}, path)
        else:
            path.write_bytes(data)
        with pytest.raises(CheckpointError, match=name.replace(".", r"\.")) as info:
            load_checkpoint(path)
        assert "weights_only=False" not in str(info.value)  # torch's unsafe advice is not passed on
        assert not marker.exists()


def test_truncated_empty_and_non_dict_files_are_checkpoint_errors(tmp_path: Path) -> None:
    good = save_checkpoint(tmp_path / "good.pt", {"w": torch.ones(64, 64)})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"truncated\.pt.*truncated"):
        load_checkpoint(truncated)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pt"):
        load_checkpoint(empty)
    tensor = save_checkpoint(tmp_path / "tensor.pt", torch.ones(2))  # type: ignore[arg-type]
    with pytest.raises(CheckpointError, match="holds a Tensor, expected a dict"):
        load_checkpoint(tensor)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")


def test_load_state_strict_names_missing_unexpected_and_misshapen_keys() -> None:
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    state = dict(model.state_dict())
    state.pop("1.bias")
    state["0.weight"] = torch.zeros(5, 2)
    state["extra"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as info:
        load_state_strict(model, state, "checkpoint['model']")
    message = str(info.value)
    assert "checkpoint['model']" in message and "missing ['1.bias']" in message
    assert "unexpected ['extra']" in message and "0.weight: checkpoint (5, 2) vs model (3, 2)" in message
    load_state_strict(model, model.state_dict(), "own state")  # a fitting state loads


# ---------------------------------------------------------------------------------------------- foreign pickles


def test_a_pickle_that_would_run_os_system_is_stubbed_and_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"payload": _Evil(marker), "w": torch.ones(2)}))
    data, skipped = load_foreign_pickle(path)
    assert not marker.exists()
    assert skipped == [_system_name()]
    stub = data["payload"]
    assert isinstance(stub, PickledStub) and stub.qualname == _system_name()
    assert stub.args == (f"touch {marker}",)  # recorded, never called
    assert torch.equal(data["w"], torch.ones(2))


def test_with_stubbing_off_an_unknown_global_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps([_Evil(marker)]))
    with pytest.raises(UnsupportedPickleError, match=r"evil\.pkl.*system.*not executed"):
        load_foreign_pickle(path, stub_unknown=False)
    assert not marker.exists()


def test_a_module_named_by_the_pickle_is_never_imported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "imported"
    (tmp_path / "sdgan_side_effect_module.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Thing: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    # protocol 2 by hand: PROTO 2, GLOBAL module.Thing, EMPTY_TUPLE, NEWOBJ, STOP
    blob = b"\x80\x02csdgan_side_effect_module\nThing\n)\x81."
    obj = RestrictedUnpickler(io.BytesIO(blob)).load()
    assert isinstance(obj, PickledStub) and obj.qualname == "sdgan_side_effect_module.Thing"
    assert "sdgan_side_effect_module" not in sys.modules and not marker.exists()


def _fake_modules() -> dict[str, types.ModuleType]:
    """Stand-ins for NVlabs' dnnlib and torch_utils, importable only while the test pickles."""
    util = types.ModuleType("dnnlib.util")

    class EasyDict(dict):
        pass

    EasyDict.__module__, EasyDict.__qualname__ = "dnnlib.util", "EasyDict"
    util.EasyDict = EasyDict  # type: ignore[attr-defined]
    persistence = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):  # pragma: no cover - must never run on load
        raise AssertionError("persistence code ran")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj  # type: ignore[attr-defined]

    class Network:
        def __init__(self) -> None:
            self.weight = torch.full((2, 2), 3.0)

        def __reduce__(self):
            meta = {"type": "class", "class_name": "Network", "module_src": "raise SystemExit", "state": self.__dict__}
            return (_reconstruct_persistent_obj, (meta,))

    persistence.Network = Network  # type: ignore[attr-defined]
    return {"dnnlib": types.ModuleType("dnnlib"), "dnnlib.util": util, "torch_utils": types.ModuleType("torch_utils"),
            "torch_utils.persistence": persistence}


def test_skipped_names_the_stubbed_classes_and_the_data_survives(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    modules = _fake_modules()
    with monkeypatch.context() as patch:
        for name, module in modules.items():
            patch.setitem(sys.modules, name, module)
        snapshot = {"G_ema": modules["torch_utils.persistence"].Network(),
                    "kwargs": modules["dnnlib.util"].EasyDict(resolution=np.int64(16), names=["a", "b"]),
                    "order": OrderedDict(a=1), "array": np.arange(3, dtype=np.float32)}
        blob = pickle.dumps(snapshot, protocol=4)
    assert "dnnlib" not in sys.modules and "torch_utils" not in sys.modules
    path = tmp_path / "snapshot.pkl"
    path.write_bytes(blob)
    data, skipped = load_foreign_pickle(path)
    assert skipped == ["torch_utils.persistence._reconstruct_persistent_obj", "dnnlib.util.EasyDict"]
    network = data["G_ema"]
    assert network.qualname == "torch_utils.persistence._reconstruct_persistent_obj"
    (meta,) = network.args
    assert meta["class_name"] == "Network" and torch.equal(meta["state"]["weight"], torch.full((2, 2), 3.0))
    kwargs = data["kwargs"]
    assert kwargs.qualname == "dnnlib.util.EasyDict" and kwargs.items == {"resolution": 16, "names": ["a", "b"]}
    assert data["order"] == OrderedDict(a=1) and data["array"].tolist() == [0.0, 1.0, 2.0]


def test_extra_globals_replace_stubs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    modules = _fake_modules()
    with monkeypatch.context() as patch:
        for name, module in modules.items():
            patch.setitem(sys.modules, name, module)
        blob = pickle.dumps(modules["dnnlib.util"].EasyDict(a=1))
    path = tmp_path / "easydict.pkl"
    path.write_bytes(blob)
    data, skipped = load_foreign_pickle(path, extra_globals={("dnnlib.util", "EasyDict"): dict})
    assert data == {"a": 1} and skipped == []


def test_a_truncated_foreign_pickle_is_a_checkpoint_error(tmp_path: Path) -> None:
    blob = pickle.dumps({"w": torch.ones(8, 8), "names": list("abcdef")})
    path = tmp_path / "cut.pkl"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pkl.*truncated"):
        load_foreign_pickle(path)
    with pytest.raises(FileNotFoundError):
        load_foreign_pickle(tmp_path / "missing.pkl")
