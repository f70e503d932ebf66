"""Unsup3d checkpoints: the official layouts (full and networks-only) and ours, loaded without running pickled code.

An official full checkpoint (`Trainer.save_checkpoint`) holds netD/A/L/V/C, optimizerD/A/L/V/C, `epoch` and a
pickled `unsup3d.meters.MetricsTrace` object in `metrics_trace`, so `torch.load(weights_only=True)` refuses it.
We first try exactly that (networks-only files and ours pass); on its refusal the file is read again by a
`RestrictedUnpickler` (training.common.checkpoint) taught torch's two file formats here: the zip archive
(`data.pkl` plus one record per storage) and the legacy single-stream format (PyTorch < 1.6, which Unsup3d's
2020 checkpoints may use). Tensors are rebuilt, unknown classes become inert stubs and are listed in
`Unsup3dNets.skipped`; nothing named by the pickle is imported or executed.

Network widths (nf, zdim) and channel counts are read from the shapes, so non-CelebA configurations load too.
Ours (`save_unsup3d`) is the official layout plus an `sdgan` entry, with metrics as plain dicts, so it loads
weights-only and the official demo (`cp['netD']` ...) reads it as well.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn

from training.common.checkpoint import (
    CheckpointError,
    PickledStub,
    RestrictedUnpickler,
    UnsupportedPickleError,
    load_checkpoint,
    load_state_strict,
    save_checkpoint,
)
from training.unsup3d.networks import NET_NAMES, ConfNet, EDDeconv, Encoder, infer_config

REQUIRED_NETS = ("netD", "netA", "netL", "netV")
OPTIMIZER_NAMES = tuple(name.replace("net", "optimizer") for name in NET_NAMES)
SDGAN_KEY = "sdgan"
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
_LEGACY_PROTOCOL = 1001
# The legacy typed-storage globals a torch.save pickle names, by dtype (static: the classes are deprecated).
_STORAGE_DTYPES = {"DoubleStorage": torch.float64, "FloatStorage": torch.float32, "HalfStorage": torch.float16,
                   "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
                   "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
                   "BoolStorage": torch.bool, "ComplexFloatStorage": torch.complex64,
                   "ComplexDoubleStorage": torch.complex128, "UntypedStorage": torch.uint8}


@dataclass
class Unsup3dNets:
    """The networks of one Unsup3d checkpoint, plus what else it said.

    `kind`: "official" (full training checkpoint), "networks" (save_clean_checkpoint) or "sdgan" (ours).
    `skipped`: pickled classes that were stubbed instead of executed (e.g. unsup3d.meters.MetricsTrace).
    `metrics`: the MetricsTrace data as plain dicts/lists, when present. `optimizers`: raw optimizer state
    dicts by official name (optimizerD ...), for resuming. `extra`: our `sdgan` entry.
    """

    netD: EDDeconv
    netA: EDDeconv
    netL: Encoder
    netV: Encoder
    netC: ConfNet | None = None
    epoch: int | None = None
    skipped: list[str] = field(default_factory=list)
    kind: str = "networks"
    metrics: Any = None
    optimizers: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def networks(self) -> dict[str, nn.Module]:
        """{netD, netA, netL, netV[, netC]} in the official order."""
        nets = {name: getattr(self, name) for name in NET_NAMES}
        return {name: net for name, net in nets.items() if net is not None}

    def to(self, device: str | torch.device) -> Unsup3dNets:
        for name, net in self.networks().items():
            setattr(self, name, net.to(device))
        return self

    def eval(self) -> Unsup3dNets:
        for net in self.networks().values():
            net.eval()
        return self


# ----------------------------------------------------------------------------------------------------------------
# Restricted reading of torch.save files (zip archive and legacy stream)


@dataclass(frozen=True)
class _StorageKind:
    """What a `torch.FloatStorage` (etc.) global stands for in a torch.save pickle: only its dtype is used."""

    dtype: torch.dtype


def _storage_globals() -> dict[tuple[str, str], Any]:
    return {("torch", name): _StorageKind(dtype) for name, dtype in _STORAGE_DTYPES.items()}


def _typed_storage(raw: bytes | bytearray, dtype: torch.dtype) -> torch.TypedStorage:
    """A CPU TypedStorage over a private copy of `raw` (torch's own loader wraps its storages the same way)."""
    data = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
    return torch.TypedStorage(wrap_storage=data.untyped_storage(), dtype=dtype, _internal=True)


class _ArchiveUnpickler(RestrictedUnpickler):
    """RestrictedUnpickler that resolves torch.save storage references (persistent ids) instead of refusing them."""

    def __init__(self, file: IO[bytes], resolve: Any) -> None:
        super().__init__(file, extra_globals=_storage_globals(), stub_unknown=True)
        self._resolve = resolve

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid:
            raise UnsupportedPickleError(f"unexpected persistent id {pid!r}")
        typename = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if typename != "storage" or not isinstance(pid[1], _StorageKind):
            raise UnsupportedPickleError(f"unsupported persistent id type {typename!r}")
        return self._resolve(pid[1].dtype, *pid[2:])


def _read_zip_archive(path: Path) -> tuple[Any, list[str]]:
    with zipfile.ZipFile(path) as archive:
        pickles = [name for name in archive.namelist() if name.count("/") == 1 and name.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise CheckpointError(f"{path} is a zip file but not a torch.save archive (no single */data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        if f"{prefix}byteorder" in archive.namelist() and archive.read(f"{prefix}byteorder").strip() != b"little":
            raise CheckpointError(f"{path}: big-endian torch archives are not supported")
        cache: dict[str, torch.TypedStorage] = {}

        def resolve(dtype: torch.dtype, key: Any, location: Any, numel: int) -> torch.TypedStorage:
            key = str(key)
            if key not in cache:
                cache[key] = _typed_storage(archive.read(f"{prefix}data/{key}"), dtype)
            return cache[key]

        unpickler = _ArchiveUnpickler(io.BytesIO(archive.read(pickles[0])), resolve)
        data = unpickler.load()
    return data, unpickler.skipped


def _read_legacy_stream(path: Path) -> tuple[Any, list[str]]:
    """PyTorch < 1.6 format: magic, protocol, sys info, the object pickle, storage keys, then raw storages."""
    with open(path, "rb") as handle:
        header = [RestrictedUnpickler(handle, stub_unknown=False).load() for _ in range(3)]
        if header[0] != _LEGACY_MAGIC or header[1] != _LEGACY_PROTOCOL:
            raise CheckpointError(f"{path} is neither a torch.save zip archive nor a legacy torch.save file")
        if isinstance(header[2], dict) and not header[2].get("little_endian", True):
            raise CheckpointError(f"{path}: big-endian torch files are not supported")
        roots: dict[str, tuple[torch.dtype, torch.Tensor]] = {}
        views: dict[str, torch.TypedStorage] = {}

        def resolve(dtype: torch.dtype, root_key: Any, location: Any, numel: int,
                    view: Any = None) -> torch.TypedStorage:
            root_key = str(root_key)
            size = torch.empty((), dtype=dtype).element_size()
            if root_key not in roots:  # filled in once the object pickle is read (its data comes after it)
                roots[root_key] = (dtype, torch.empty(int(numel) * size, dtype=torch.uint8))
            buffer = roots[root_key][1]
            if view is None:
                return torch.TypedStorage(wrap_storage=buffer.untyped_storage(), dtype=dtype, _internal=True)
            view_key, offset, view_size = view
            if str(view_key) not in views:
                part = buffer.untyped_storage()[int(offset) * size: (int(offset) + int(view_size)) * size]
                views[str(view_key)] = torch.TypedStorage(wrap_storage=part, dtype=dtype, _internal=True)
            return views[str(view_key)]

        unpickler = _ArchiveUnpickler(handle, resolve)
        data = unpickler.load()
        keys = RestrictedUnpickler(handle, stub_unknown=False).load()
        for key in keys:
            dtype, buffer = roots[str(key)]
            (count,) = struct.unpack("<q", handle.read(8))
            nbytes = count * torch.empty((), dtype=dtype).element_size()
            raw = handle.read(nbytes)
            if len(raw) != nbytes or nbytes != buffer.numel():
                raise CheckpointError(f"{path}: storage {key} is truncated or has an unexpected size")
            buffer.copy_(torch.frombuffer(bytearray(raw), dtype=torch.uint8))
    return data, unpickler.skipped


def read_torch_file_restricted(path: str | Path) -> tuple[Any, list[str]]:
    """(object, stubbed class names) of a torch.save file, without importing or running anything it names."""
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            return _read_zip_archive(path)
        return _read_legacy_stream(path)
    except (CheckpointError, FileNotFoundError):
        raise
    except Exception as exc:  # truncation and garbage surface as many types
        raise CheckpointError(f"{path} is not a readable torch.save file: {type(exc).__name__}: {exc}") from exc


# ----------------------------------------------------------------------------------------------------------------
# Loading and saving


def _read_any(path: Path) -> tuple[Any, list[str]]:
    """Weights-only first; only a refused pickle (unknown class) falls back to the restricted reader."""
    try:
        return load_checkpoint(path), []
    except CheckpointError as exc:
        if not isinstance(exc.__cause__, pickle.UnpicklingError):
            raise
    return read_torch_file_restricted(path)


def _plain(value: Any) -> Any:
    """Stubs (e.g. MetricsTrace) replaced by their pickled state, recursively, so only plain data remains."""
    if isinstance(value, PickledStub):
        state = value.state
        if isinstance(state, dict) and set(state) == {"data"}:
            state = state["data"]
        return _plain(state if state is not None else {"args": list(value.args), "items": value.items})
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_plain(item) for item in value)
    return value


def _describe_keys(checkpoint: Mapping[Any, Any]) -> str:
    keys = sorted(str(key) for key in checkpoint)
    return f"{keys[:12]}{' ...' if len(keys) > 12 else ''}"


def load_unsup3d(path: str | Path, device: str | torch.device = "cpu") -> Unsup3dNets:
    """Networks of an official (full or networks-only) or our Unsup3d checkpoint; no pickled code is run."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Unsup3d checkpoint not found: {path}")
    checkpoint, skipped = _read_any(path)
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path} holds a {type(checkpoint).__name__}, not an Unsup3d checkpoint dict")
    missing = [name for name in REQUIRED_NETS if name not in checkpoint]
    if missing:
        raise CheckpointError(f"{path} is not an Unsup3d checkpoint: it lacks {missing}; its keys are "
                              f"{_describe_keys(checkpoint)} (expected netD, netA, netL, netV and optionally netC)")
    nets: dict[str, nn.Module | None] = {}
    for name in NET_NAMES:
        state = checkpoint.get(name)
        if state is None:
            nets[name] = None
            continue
        if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(f"{path}: {name} is not a state dict of tensors")
        try:
            config = infer_config(name, state)
            net = config.build()
        except (KeyError, ValueError, IndexError) as exc:
            raise CheckpointError(f"{path}: {name} is not an Unsup3d network ({type(exc).__name__}: {exc})") from exc
        load_state_strict(net, state, f"{path}: {name}")
        nets[name] = net.to(device).eval()
    epoch = checkpoint.get("epoch")
    optimizers = {name: checkpoint[name] for name in OPTIMIZER_NAMES if isinstance(checkpoint.get(name), dict)}
    if SDGAN_KEY in checkpoint:
        kind = "sdgan"
    elif optimizers or "epoch" in checkpoint or "metrics_trace" in checkpoint:
        kind = "official"
    else:
        kind = "networks"
    extra = checkpoint.get(SDGAN_KEY)
    return Unsup3dNets(
        netD=nets["netD"], netA=nets["netA"], netL=nets["netL"], netV=nets["netV"], netC=nets["netC"],
        epoch=int(epoch) if isinstance(epoch, (int, float)) and not isinstance(epoch, bool) else None,
        skipped=list(skipped), kind=kind,
        metrics=_plain(checkpoint["metrics_trace"]) if "metrics_trace" in checkpoint else None,
        optimizers=_plain(optimizers), extra=dict(extra) if isinstance(extra, dict) else {})


def _cpu_state(module_or_state: nn.Module | Mapping[str, Any]) -> dict[str, Any]:
    state = module_or_state.state_dict() if hasattr(module_or_state, "state_dict") else module_or_state
    return {key: value.detach().cpu() if isinstance(value, torch.Tensor) else value for key, value in state.items()}


def save_unsup3d(path: str | Path, nets: Unsup3dNets | Mapping[str, nn.Module],
                 optimizers: Mapping[str, torch.optim.Optimizer | Mapping[str, Any]] | None = None,
                 epoch: int | None = None, extra: Mapping[str, Any] | None = None,
                 metrics: Any = None) -> Path:
    """Write the official layout (netD ..., optimizerD ..., epoch, metrics_trace) plus `sdgan`: plain data only.

    `optimizers` may be keyed netD or optimizerD; metrics are plain dicts/lists (not a MetricsTrace object),
    so the file loads weights-only. `extra` is stored under "sdgan" (always present, marks the file as ours).
    """
    modules = nets.networks() if isinstance(nets, Unsup3dNets) else dict(nets)
    unknown = sorted(set(modules) - set(NET_NAMES))
    if unknown or any(name not in modules for name in REQUIRED_NETS):
        raise ValueError(f"expected networks {NET_NAMES} (netC optional), got {sorted(modules)}")
    checkpoint: dict[str, Any] = {name: _cpu_state(module) for name, module in modules.items() if module is not None}
    for name, optimizer in (optimizers or {}).items():
        key = name.replace("net", "optimizer") if name.startswith("net") else name
        if key not in OPTIMIZER_NAMES:
            raise ValueError(f"unknown optimizer name {name!r} (expected one of {OPTIMIZER_NAMES})")
        checkpoint[key] = optimizer.state_dict() if hasattr(optimizer, "state_dict") else dict(optimizer)
    if epoch is None and isinstance(nets, Unsup3dNets):
        epoch = nets.epoch
    if epoch is not None:
        checkpoint["epoch"] = int(epoch)
    if metrics is None and isinstance(nets, Unsup3dNets):
        metrics = nets.metrics
    if metrics is not None:
        checkpoint["metrics_trace"] = metrics
    checkpoint[SDGAN_KEY] = {"format": 1, **dict(extra or {})}
    return save_checkpoint(path, checkpoint)


__all__ = ["Unsup3dNets", "load_unsup3d", "read_torch_file_restricted", "save_unsup3d"]
