"""The restricted unpickler behind :mod:`trainer.weights.checkpoints`: tensors and nothing else.

A ``.pth`` file is a pickle, and unpickling can run arbitrary code. This module's
``pickle.Unpickler`` has a ``find_class`` that admits only the handful of globals a tensor state
dict needs (``collections.OrderedDict``, torch's tensor-rebuild functions and storage types), each
mapped to a local, side-effect-free function; every other global raises
:class:`UnsafeCheckpointError` before anything is called. Tensors come out as :class:`TensorRef`
views of :class:`Storage` objects whose bytes the checkpoint layout reader fills in afterwards.
"""

from __future__ import annotations

import collections
import pickle
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np

__all__ = [
    "CheckpointFormatError",
    "Storage",
    "TensorRef",
    "UnsafeCheckpointError",
    "plain_unpickle",
    "unpickle",
]


class UnsafeCheckpointError(pickle.UnpicklingError):
    """The checkpoint's pickle refers to something other than tensors and plain containers."""


class CheckpointFormatError(ValueError):
    """The file is not a readable PyTorch checkpoint (truncated, corrupt, or an unknown layout)."""


# torch storage class name -> numpy dtype of one element. BFloat16 has no numpy dtype: it is read
# as its raw 16 bits and widened to float32 (bfloat16 is the upper half of a float32).
_STORAGE_DTYPES: dict[str, np.dtype[Any]] = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype("<u2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
    "UntypedStorage": np.dtype("u1"),
}


def _refuse_setstate(obj: object) -> None:
    raise UnsafeCheckpointError(f"checkpoint tries to set the state of a {type(obj).__name__}")


@dataclass(frozen=True, slots=True)
class _StorageType:
    """Stand-in for a torch storage class named in the pickle (e.g. ``torch.FloatStorage``)."""

    name: str

    def __setstate__(self, state: object) -> None:
        _refuse_setstate(self)

    @property
    def dtype(self) -> np.dtype[Any]:
        return _STORAGE_DTYPES[self.name]


@dataclass(slots=True)
class Storage:
    """A storage referenced by the pickle; ``data`` is filled once its bytes have been read."""

    storage_type: _StorageType
    key: str
    numel: int
    data: np.ndarray | None = field(default=None, repr=False)

    def __setstate__(self, state: object) -> None:
        _refuse_setstate(self)


@dataclass(frozen=True, slots=True)
class TensorRef:
    """A tensor described by the pickle, materialised after every storage has been read.

    A pickle's BUILD opcode may not rewrite it (nor a storage): ``__setstate__`` refuses.
    """

    storage: Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def __setstate__(self, state: object) -> None:
        _refuse_setstate(self)

    def materialise(self) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise CheckpointFormatError(f"storage {self.storage.key!r} was never read")
        if len(self.size) != len(self.stride):
            raise CheckpointFormatError(
                f"tensor size {self.size} and stride {self.stride} differ in rank"
            )
        if any(s < 0 for s in self.size) or any(s < 0 for s in self.stride) or self.offset < 0:
            raise CheckpointFormatError("negative tensor size, stride or offset")
        if 0 in self.size:
            array = np.zeros(self.size, dtype=data.dtype)
        else:
            last = self.offset + sum(
                (n - 1) * s for n, s in zip(self.size, self.stride, strict=True)
            )
            if last >= data.size:
                raise CheckpointFormatError(
                    f"tensor view (offset {self.offset}, size {self.size}, stride {self.stride}) "
                    f"runs past its storage of {data.size} elements"
                )
            base = data[self.offset :]
            strides = tuple(s * data.itemsize for s in self.stride)
            array = np.lib.stride_tricks.as_strided(base, shape=self.size, strides=strides).copy()
        if self.storage.storage_type.name == "BFloat16Storage":
            array = (array.astype(np.uint32) << 16).view(np.float32)
        return array


def _rebuild_tensor(
    storage: Any, storage_offset: Any, size: Any, stride: Any, *_: Any
) -> TensorRef:
    """Safe counterpart of ``torch._utils._rebuild_tensor`` / ``_rebuild_tensor_v2``.

    The v2 extras (requires_grad, backward hooks, metadata) have no meaning for a numpy array.
    """
    if not isinstance(storage, Storage):
        raise UnsafeCheckpointError("tensor rebuilt from something that is not a storage")
    try:
        return TensorRef(
            storage, int(storage_offset), tuple(map(int, size)), tuple(map(int, stride))
        )
    except (TypeError, ValueError) as exc:
        raise CheckpointFormatError(f"malformed tensor description: {exc}") from exc


def _rebuild_parameter(
    data: Any, requires_grad: Any = False, backward_hooks: Any = None, *_: Any
) -> Any:
    """Safe counterpart of ``torch._utils._rebuild_parameter``: a parameter is just its tensor."""
    if not isinstance(data, TensorRef):
        raise UnsafeCheckpointError("parameter rebuilt from something that is not a tensor")
    return data


def _ordered_dict(*args: Any) -> collections.OrderedDict[Any, Any]:
    """``collections.OrderedDict`` restricted to plain construction (no keyword tricks)."""
    return collections.OrderedDict(*args)


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): _ordered_dict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
    ("torch.storage", "UntypedStorage"): _StorageType("UntypedStorage"),
}


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals in ``_ALLOWED_GLOBALS`` and collects storages."""

    def __init__(self, file: IO[bytes], storages: dict[str, Storage]) -> None:
        super().__init__(file, encoding="utf-8")
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafeCheckpointError(
                f"checkpoint refers to {module}.{name}, which a tensor state dict never needs; "
                "refusing to load it"
            ) from None

    def persistent_load(self, pid: Any) -> Storage:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] in ("storage", b"storage")):
            raise UnsafeCheckpointError(f"unsupported persistent id in checkpoint: {pid!r:.80}")
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType):
            raise UnsafeCheckpointError("persistent id names no known storage type")
        key = key.decode("ascii") if isinstance(key, bytes) else str(key)
        if len(pid) > 5 and pid[5] is not None:
            # Legacy storage views (torch < 0.4) share bytes between storages; no state dict
            # written by torch >= 1.0 uses them.
            raise CheckpointFormatError("legacy storage views are not supported")
        storage = self.storages.get(key)
        if storage is None:
            storage = Storage(storage_type, key, int(numel))
            self.storages[key] = storage
        elif storage.storage_type != storage_type:
            raise CheckpointFormatError(f"storage {key!r} is used with two element types")
        return storage


def unpickle(file: IO[bytes], storages: dict[str, Storage]) -> Any:
    """Read one pickled object, recording every storage it refers to in ``storages`` by key.

    Raises:
        UnsafeCheckpointError: the pickle refers to a global a tensor state dict never needs.
        CheckpointFormatError: the pickle is corrupt or truncated.
    """
    try:
        return _StateDictUnpickler(file, storages).load()
    except (UnsafeCheckpointError, CheckpointFormatError):
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        TypeError,
        ValueError,
        AttributeError,
        IndexError,
    ) as exc:
        raise CheckpointFormatError(f"corrupt checkpoint pickle: {exc}") from exc


def plain_unpickle(file: IO[bytes]) -> Any:
    """Unpickle one of the legacy header records, which hold only numbers, strings and dicts."""
    return unpickle(file, {})
