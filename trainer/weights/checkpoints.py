"""Read PyTorch ``.pth`` state dicts into numpy arrays without importing torch, safely.

The pickle inside a checkpoint is read by the restricted unpickler of
:mod:`trainer.weights.torch_pickle`, which refuses anything but tensors and plain containers
(:class:`UnsafeCheckpointError`). Both layouts torch has written since 1.0 are supported:

* the zip layout (torch >= 1.6 default): ``<prefix>/data.pkl`` plus one raw file per storage under
  ``<prefix>/data/<key>``;
* the legacy layout (``_use_new_zipfile_serialization=False`` and torch < 1.6): five consecutive
  pickles (magic number, protocol version, system info, the object, the storage keys) followed by
  each storage as a little-endian int64 element count and the raw bytes.
"""

from __future__ import annotations

import io
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

from trainer.weights.torch_pickle import (
    CheckpointFormatError,
    Storage,
    TensorRef,
    UnsafeCheckpointError,
    plain_unpickle,
    unpickle,
)

__all__ = ["CheckpointFormatError", "UnsafeCheckpointError", "read_torch_state_dict"]

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001


def _read_zip(archive: zipfile.ZipFile) -> tuple[Any, dict[str, Storage]]:
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise CheckpointFormatError("zip checkpoint must contain exactly one <prefix>/data.pkl")
    prefix = pickles[0].removesuffix("data.pkl")
    byteorder = "little"
    if f"{prefix}byteorder" in archive.namelist():
        byteorder = archive.read(f"{prefix}byteorder").decode("ascii").strip()
    if byteorder not in ("little", "big"):
        raise CheckpointFormatError(f"unknown byte order {byteorder!r}")
    storages: dict[str, Storage] = {}
    with archive.open(pickles[0]) as pkl:
        obj = unpickle(io.BytesIO(pkl.read()), storages)
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


def _read_legacy(file: IO[bytes]) -> tuple[Any, dict[str, Storage]]:
    magic = plain_unpickle(file)
    if magic != LEGACY_MAGIC_NUMBER:
        raise CheckpointFormatError("not a PyTorch checkpoint (bad magic number)")
    version = plain_unpickle(file)
    if version != LEGACY_PROTOCOL_VERSION:
        raise CheckpointFormatError(f"unsupported legacy checkpoint protocol {version!r}")
    sys_info = plain_unpickle(file)
    if isinstance(sys_info, Mapping) and not sys_info.get("little_endian", True):
        raise CheckpointFormatError("big-endian legacy checkpoints are not supported")
    storages: dict[str, Storage] = {}
    obj = unpickle(file, storages)
    keys = plain_unpickle(file)
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
    if isinstance(obj, TensorRef):
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
