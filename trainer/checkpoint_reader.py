"""Read PyTorch ``.pth`` state dicts into numpy arrays without importing torch.

A ``.pth`` file is a pickle, and unpickling can run arbitrary code. This reader uses a
``pickle.Unpickler`` whose ``find_class`` admits only the handful of globals a tensor state dict
needs (``collections.OrderedDict``, torch's tensor-rebuild functions and storage types), each mapped
to a local, side-effect-free function; every other global raises :class:`UnsafeCheckpointError`
before anything is called.

Both layouts torch has written since 1.0 are supported:

* the zip layout (torch >= 1.6 default): ``<prefix>/data.pkl`` plus one raw file per storage under
  ``<prefix>/data/<key>``;
* the legacy layout (``_use_new_zipfile_serialization=False`` and torch < 1.6): five consecutive
  pickles (magic number, protocol version, system info, the object, the storage keys) followed by
  each storage as a little-endian int64 element count and the raw bytes.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = ["CheckpointFormatError", "UnsafeCheckpointError", "read_torch_state_dict"]

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001


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
class _Storage:
    """A storage referenced by the pickle; ``data`` is filled once its bytes have been read."""

    storage_type: _StorageType
    key: str
    numel: int
    data: np.ndarray | None = field(default=None, repr=False)

    def __setstate__(self, state: object) -> None:
        _refuse_setstate(self)


@dataclass(frozen=True, slots=True)
class _TensorRef:
    """A tensor described by the pickle, materialised after every storage has been read.

    A pickle's BUILD opcode may not rewrite it (nor a storage): ``__setstate__`` refuses.
    """

    storage: _Storage
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
) -> _TensorRef:
    """Safe counterpart of ``torch._utils._rebuild_tensor`` / ``_rebuild_tensor_v2``.

    The v2 extras (requires_grad, backward hooks, metadata) have no meaning for a numpy array.
    """
    if not isinstance(storage, _Storage):
        raise UnsafeCheckpointError("tensor rebuilt from something that is not a storage")
    try:
        return _TensorRef(
            storage, int(storage_offset), tuple(map(int, size)), tuple(map(int, stride))
        )
    except (TypeError, ValueError) as exc:
        raise CheckpointFormatError(f"malformed tensor description: {exc}") from exc


def _rebuild_parameter(
    data: Any, requires_grad: Any = False, backward_hooks: Any = None, *_: Any
) -> Any:
    """Safe counterpart of ``torch._utils._rebuild_parameter``: a parameter is just its tensor."""
    if not isinstance(data, _TensorRef):
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

    def __init__(self, file: IO[bytes], storages: dict[str, _Storage]) -> None:
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

    def persistent_load(self, pid: Any) -> _Storage:
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
            storage = _Storage(storage_type, key, int(numel))
            self.storages[key] = storage
        elif storage.storage_type != storage_type:
            raise CheckpointFormatError(f"storage {key!r} is used with two element types")
        return storage


def _unpickle(file: IO[bytes], storages: dict[str, _Storage]) -> Any:
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


def _plain_unpickle(file: IO[bytes]) -> Any:
    """Unpickle one of the legacy header records, which hold only numbers, strings and dicts."""
    return _unpickle(file, {})


def _read_zip(archive: zipfile.ZipFile) -> tuple[Any, dict[str, _Storage]]:
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise CheckpointFormatError("zip checkpoint must contain exactly one <prefix>/data.pkl")
    prefix = pickles[0].removesuffix("data.pkl")
    byteorder = "little"
    if f"{prefix}byteorder" in archive.namelist():
        byteorder = archive.read(f"{prefix}byteorder").decode("ascii").strip()
    if byteorder not in ("little", "big"):
        raise CheckpointFormatError(f"unknown byte order {byteorder!r}")
    storages: dict[str, _Storage] = {}
    with archive.open(pickles[0]) as pkl:
        obj = _unpickle(io.BytesIO(pkl.read()), storages)
    for key, storage in storages.items():
        try:
            raw = archive.read(f"{prefix}data/{key}")
        except KeyError:
            raise CheckpointFormatError(
                f"storage file data/{key} missing from checkpoint"
            ) from None
        dtype = storage.storage_type.dtype.newbyteorder("<" if byteorder == "little" else ">")
        if len(raw) < storage.numel * dtype.itemsize:
            raise CheckpointFormatError(
                f"storage data/{key} is shorter than its {storage.numel} elements"
            )
        storage.data = np.frombuffer(raw, dtype=dtype, count=storage.numel).astype(
            dtype.newbyteorder("=")
        )
    return obj, storages


def _read_legacy(file: IO[bytes]) -> tuple[Any, dict[str, _Storage]]:
    magic = _plain_unpickle(file)
    if magic != LEGACY_MAGIC_NUMBER:
        raise CheckpointFormatError("not a PyTorch checkpoint (bad magic number)")
    version = _plain_unpickle(file)
    if version != LEGACY_PROTOCOL_VERSION:
        raise CheckpointFormatError(f"unsupported legacy checkpoint protocol {version!r}")
    sys_info = _plain_unpickle(file)
    if isinstance(sys_info, Mapping) and not sys_info.get("little_endian", True):
        raise CheckpointFormatError("big-endian legacy checkpoints are not supported")
    storages: dict[str, _Storage] = {}
    obj = _unpickle(file, storages)
    keys = _plain_unpickle(file)
    if not isinstance(keys, list):
        raise CheckpointFormatError("legacy checkpoint has no storage key list")
    for key in keys:
        storage = storages.get(str(key))
        if storage is None:
            raise CheckpointFormatError(f"storage key {key!r} listed but never referenced")
        header = file.read(8)
        if len(header) != 8:
            raise CheckpointFormatError("checkpoint truncated in its storage data")
        (numel,) = struct.unpack("<q", header)
        if numel != storage.numel:
            raise CheckpointFormatError(
                f"storage {key!r} holds {numel} elements, pickle says {storage.numel}"
            )
        nbytes = numel * storage.storage_type.dtype.itemsize
        raw = file.read(nbytes)
        if len(raw) != nbytes:
            raise CheckpointFormatError("checkpoint truncated in its storage data")
        storage.data = np.frombuffer(raw, dtype=storage.storage_type.dtype).astype(
            storage.storage_type.dtype.newbyteorder("=")
        )
    return obj, storages


def _flatten(obj: Any, prefix: str, out: dict[str, np.ndarray]) -> None:
    if isinstance(obj, _TensorRef):
        out[prefix] = obj.materialise()
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            _flatten(value, f"{prefix}.{key}" if prefix else str(key), out)


def read_torch_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Read the tensors of a PyTorch checkpoint as numpy arrays, without torch and safely.

    Args:
        path: a ``.pth``/``.pt`` file written by ``torch.save`` of a state dict (zip or legacy layout).
            A checkpoint that nests its state dict (``{"state_dict": {...}, "epoch": 3}``) is
            flattened with dotted keys; values that are not tensors are skipped.

    Returns:
        The tensors by name, in file order, each a C-contiguous array with the tensor's dtype
        (bfloat16 is widened to float32).

    Raises:
        UnsafeCheckpointError: the pickle refers to any global beyond tensor rebuilding and
            ``OrderedDict`` (e.g. ``os.system``, a pickled ``nn.Module``); nothing is executed.
        CheckpointFormatError: the file is not a readable checkpoint.
    """
    path = Path(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            obj, _ = _read_zip(archive)
    else:
        with path.open("rb") as file:
            obj, _ = _read_legacy(file)
    if not isinstance(obj, Mapping):
        raise CheckpointFormatError(f"checkpoint holds a {type(obj).__name__}, not a state dict")
    tensors: dict[str, np.ndarray] = {}
    _flatten(obj, "", tensors)
    return tensors
