"""Checkpoint I/O every trainer shares: safe loading, atomic saving, strict state loading, foreign pickles.

Our own checkpoints (and other projects' `torch.save` files) are read with `torch.load(weights_only=True)`
only, with a caller-given allowlist of extra classes; anything else in the file is refused, never executed.
Every failure (missing network aside) becomes one `CheckpointError` naming the file, instead of the dozen
exception types a truncated or hostile file can raise.

Foreign pickles (NVlabs snapshots and the like) cannot be read that way: they name classes of code we do
not have. `RestrictedUnpickler` reads them without importing or running anything: tensors and plain
containers are rebuilt, and every other class or function the pickle names becomes an inert
`PickledStub` that records what it stood for (module.name) and the data it was given. `skipped` lists
those names, so a caller can say what it ignored.
"""

from __future__ import annotations

import argparse
import codecs
import copyreg
import io
import pickle
import re
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from data_catalog.atomic import atomic_writer

if TYPE_CHECKING:
    from typing_extensions import Self

try:  # numpy >= 2
    from numpy._core import multiarray as _np_multiarray
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _np_multiarray


class CheckpointError(ValueError):
    """A checkpoint is unreadable, lacks a network, or does not fit the model it is loaded into."""


class UnsupportedPickleError(CheckpointError, pickle.UnpicklingError):
    """A pickle names a global that may be neither rebuilt nor stubbed (nothing from it was executed)."""


# ----------------------------------------------------------------------------------------------------------------
# Our checkpoints: torch.load(weights_only=True)

_GLOBAL_IN_MESSAGE = re.compile(r"GLOBAL ([\w.]+)")


def _describe_load_error(path: Path, exc: Exception) -> str:
    """One readable sentence for a failed weights-only load (torch's own advice, weights_only=False, is unsafe)."""
    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError):
        found = _GLOBAL_IN_MESSAGE.search(text)
        if found:
            return (f"{path} holds a {found.group(1)} object, which is not allowed in a checkpoint (refused, "
                    f"nothing was executed); only tensors, plain containers and the allowed classes load")
        detail = text.split("WeightsUnpickler error:", 1)[-1].strip().splitlines()
        return (f"{path} is not a readable PyTorch checkpoint (truncated or corrupt, or it holds objects other "
                f"than tensors and plain containers): {detail[0] if detail else type(exc).__name__}")
    first_line = text.strip().splitlines()[0] if text.strip() else "(no message)"
    return f"{path} is not a readable PyTorch checkpoint (truncated or corrupt): {type(exc).__name__}: {first_line}"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    allowed_globals: Iterable[Any] = ()) -> dict[str, Any]:
    """Read a checkpoint dict without executing any pickled code.

    `allowed_globals` are classes the file may hold besides tensors and plain containers (e.g.
    `argparse.Namespace` for rosinality's `args`). A missing file is FileNotFoundError; everything else that
    goes wrong is CheckpointError.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(list(allowed_globals)):
            # raw pickles (not zip archives) make torch warn about the protocol before refusing them anyway
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # malformed bytes surface as many types (UnpicklingError, RuntimeError, EOFError...)
        raise CheckpointError(_describe_load_error(path, exc)) from exc
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path} holds a {type(checkpoint).__name__}, expected a dict")
    return checkpoint


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> Path:
    """Write atomically (temp file + rename): a killed process leaves the previous file, never a truncated one."""
    path = Path(path)
    with atomic_writer(path) as handle:
        torch.save(checkpoint, handle)
    return path


def load_state_strict(model: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """load_state_dict(strict=True) with one readable error listing missing, unexpected and misshapen keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    misshapen = [f"{key}: checkpoint {tuple(state[key].shape)} vs model {tuple(own[key].shape)}"
                 for key in own if key in state and state[key].shape != own[key].shape]
    if missing or unexpected or misshapen:
        parts = [f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}" if missing else "",
                 f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}" if unexpected else "",
                 f"wrong shape {misshapen[:5]}{' ...' if len(misshapen) > 5 else ''}" if misshapen else ""]
        raise CheckpointError(f"{what} does not fit the model: " + "; ".join(p for p in parts if p))
    model.load_state_dict(state, strict=True)


# ----------------------------------------------------------------------------------------------------------------
# Foreign pickles: a restricted unpickler that stubs what it does not know


class PickledStub:
    """Inert stand-in for an object of a class (or the result of a function) that was not imported.

    `qualname` is what the pickle named ("module.name"); `args` / `kwargs` what it would have been called
    with, `state` what it would have received in __setstate__, `items` / `list_items` the entries of a
    dict or list subclass. Nothing here calls anything.
    """

    qualname: ClassVar[str] = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        stub = super().__new__(cls)
        stub.args, stub.kwargs = args, kwargs
        stub.state, stub.items, stub.list_items = None, {}, []
        return stub

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass  # the arguments were recorded by __new__; a stub runs no constructor

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items[key] = value

    def append(self, value: Any) -> None:
        self.list_items.append(value)

    def extend(self, values: Iterable[Any]) -> None:
        self.list_items.extend(values)

    def __repr__(self) -> str:
        return f"<stub of {self.qualname}>"


_STUB_TYPES: dict[str, type[PickledStub]] = {}


def stub_type(qualname: str) -> type[PickledStub]:
    """The (cached) PickledStub subclass standing for `qualname`, so equal names give the same class."""
    if qualname not in _STUB_TYPES:
        name = qualname.rpartition(".")[2]
        _STUB_TYPES[qualname] = type(name if name.isidentifier() else "Stub", (PickledStub,), {"qualname": qualname})
    return _STUB_TYPES[qualname]


def _rebuild_tensor(storage: Any, *args: Any) -> torch.Tensor:
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise UnsupportedPickleError(f"tensor rebuilt from a {type(storage).__name__}, not a storage")
    return torch._utils._rebuild_tensor_v2(storage, *args)


def _rebuild_parameter(data: Any, *args: Any) -> torch.Tensor:
    """Parameters come back as plain tensors; their backward hooks (code) are dropped."""
    if not isinstance(data, torch.Tensor):
        raise UnsupportedPickleError("parameter rebuilt from a non-tensor")
    return data.detach()


def _rebuild_from_type(func: Any, new_type: Any, args: Any, state: Any) -> torch.Tensor:
    if new_type not in (torch.Tensor, torch.nn.Parameter) or func not in (_rebuild_tensor, _rebuild_parameter):
        raise UnsupportedPickleError(f"tensor subclass {new_type!r} is not supported")
    return func(*args)


def _load_storage_from_bytes(data: bytes) -> Any:
    """Tensors in a plain pickle carry their storage as a nested torch.save blob: read it weights-only."""
    if not isinstance(data, (bytes, bytearray)):
        raise UnsupportedPickleError("torch.storage._load_from_bytes expects bytes")
    blob = io.BytesIO(bytes(data))
    return torch.load(blob, weights_only=True)


def _latin1_encode(text: Any, encoding: str = "latin1") -> bytes:
    """Protocol-2 pickles spell bytes as _codecs.encode(str, 'latin1'); no other codec is needed."""
    if not isinstance(text, str) or encoding.replace("-", "").lower() != "latin1":
        raise UnsupportedPickleError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return codecs.encode(text, "latin1")


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """copyreg._reconstructor, except that a stub class gets an empty stub (its base is never called)."""
    if isinstance(cls, type) and issubclass(cls, PickledStub):
        return cls.__new__(cls)
    return copyreg._reconstructor(cls, base, state)


_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")  # numpy 1.x / 2.x spelling of the same
# What a foreign pickle may rebuild for real: tensors, numpy arrays and scalars, plain containers. Each entry
# either is a data type whose constructor runs no user code or is a wrapper that checks its arguments.
SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("builtins", "bytearray"): bytearray,
    ("builtins", "object"): object,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("_codecs", "encode"): _latin1_encode,
    ("argparse", "Namespace"): argparse.Namespace,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
    ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
    ("torch", "Tensor"): torch.Tensor,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
for _module in _NUMPY_MODULES:
    SAFE_GLOBALS[(_module, "_reconstruct")] = _np_multiarray._reconstruct
    SAFE_GLOBALS[(_module, "scalar")] = _np_multiarray.scalar
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}

StubPolicy = bool | Callable[[str, str], bool]


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles without importing or running any code named by the pickle.

    Globals in SAFE_GLOBALS (or `extra_globals`, which take precedence) are rebuilt; torch dtypes are
    returned as themselves. Any other global becomes a PickledStub class when `stub_unknown` allows it
    (True, or a predicate on (module, name)), and is refused with UnsupportedPickleError otherwise. The
    names stubbed are in `skipped`, in the order first met.
    """

    def __init__(self, file: IO[bytes], *, extra_globals: Mapping[tuple[str, str], Any] | None = None,
                 stub_unknown: StubPolicy = True) -> None:
        super().__init__(file)
        self.allowed = {**SAFE_GLOBALS, **(extra_globals or {})}
        self.stub_unknown = stub_unknown
        self.skipped: list[str] = []

    def _may_stub(self, module: str, name: str) -> bool:
        return self.stub_unknown(module, name) if callable(self.stub_unknown) else bool(self.stub_unknown)

    def find_class(self, module: str, name: str) -> Any:
        module = _PY2_MODULES.get(module, module)  # protocol <= 2 pickles use Python 2 module names
        if (module, name) in self.allowed:
            return self.allowed[(module, name)]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if self._may_stub(module, name):
            qualname = f"{module}.{name}"
            if qualname not in self.skipped:
                self.skipped.append(qualname)
            return stub_type(qualname)
        raise UnsupportedPickleError(f"pickle references {module}.{name}, which is not allowed (not executed)")

    def persistent_load(self, pid: Any) -> Any:
        raise UnsupportedPickleError("the pickle uses persistent ids (a torch.save archive?): read it with "
                                     "load_checkpoint instead")


def load_foreign_pickle(path: str | Path, *, extra_globals: Mapping[tuple[str, str], Any] | None = None,
                        stub_unknown: StubPolicy = True) -> tuple[Any, list[str]]:
    """(object, names stubbed) of a plain pickle file, read with RestrictedUnpickler; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pickle not found: {path}")
    with open(path, "rb") as handle:
        unpickler = RestrictedUnpickler(handle, extra_globals=extra_globals, stub_unknown=stub_unknown)
        try:
            data = unpickler.load()
        except UnsupportedPickleError as exc:
            raise UnsupportedPickleError(f"{path}: {exc}") from None
        except Exception as exc:  # truncation and garbage surface as EOFError, UnpicklingError, TypeError, ...
            raise CheckpointError(f"{path} is not a readable pickle (truncated or corrupt, or it rebuilds objects "
                                  f"in a way stubs cannot follow): {type(exc).__name__}: {exc}") from exc
    return data, unpickler.skipped
