"""The torch-free ``.pth`` reader: real checkpoints, hand-built ones, and hostile pickles.

Hand-built checkpoints are written opcode by opcode (torch is not installed, and pickling stand-in
classes would need a fake ``torch`` module), in the two layouts ``torch.save`` writes.
"""

from __future__ import annotations

import os
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from trainer.weights.checkpoints import (
    LEGACY_MAGIC_NUMBER,
    LEGACY_PROTOCOL_VERSION,
    CheckpointFormatError,
    UnsafeCheckpointError,
    read_torch_state_dict,
)
from trainer.weights.pretrained import (
    PretrainedWeightsUnavailable,
    checkpoint_path,
    default_cache_dir,
)

# --- a minimal pickle emitter (protocol 2 opcodes) -------------------------------------------

PROTO_2, MARK, TUPLE, EMPTY_TUPLE, REDUCE = b"\x80\x02", b"(", b"t", b")", b"R"
SETITEMS, STOP, NEWFALSE, BINPERSID = b"u", b".", b"\x89", b"Q"


def _global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def _str(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _int(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)


def _tuple(*items: bytes) -> bytes:
    return MARK + b"".join(items) + TUPLE


def _ordered_dict() -> bytes:
    return _global("collections", "OrderedDict") + EMPTY_TUPLE + REDUCE


def _tensor(
    key: str, storage: str, numel: int, offset: int, size: tuple[int, ...], stride: tuple[int, ...]
) -> bytes:
    persistent_id = _tuple(
        _str("storage"), _global("torch", storage), _str(key), _str("cpu"), _int(numel)
    )
    args = _tuple(
        persistent_id + BINPERSID,
        _int(offset),
        _tuple(*map(_int, size)),
        _tuple(*map(_int, stride)),
        NEWFALSE,
        _ordered_dict(),
    )
    return _global("torch._utils", "_rebuild_tensor_v2") + args + REDUCE


def _parameter(tensor: bytes) -> bytes:
    return (
        _global("torch._utils", "_rebuild_parameter")
        + _tuple(tensor, NEWFALSE, _ordered_dict())
        + REDUCE
    )


def _state_dict_pickle(entries: dict[str, bytes]) -> bytes:
    items = b"".join(_str(name) + value for name, value in entries.items())
    return PROTO_2 + _ordered_dict() + MARK + items + SETITEMS + STOP


# Storage "0": 12 floats viewed as a 3x4 matrix, its transpose (a strided view) and a slice at an
# offset; storage "1": one int64 as a 0-d tensor (BatchNorm's num_batches_tracked).
STORAGE_0 = np.arange(12, dtype="<f4") * 0.5
STORAGE_1 = np.array([7], dtype="<i8")
ENTRIES = {
    "conv.weight": _parameter(_tensor("0", "FloatStorage", 12, 0, (3, 4), (4, 1))),
    "conv.weight_t": _tensor("0", "FloatStorage", 12, 0, (4, 3), (1, 4)),
    "bn.bias": _tensor("0", "FloatStorage", 12, 5, (2,), (3,)),
    "bn.num_batches_tracked": _tensor("1", "LongStorage", 1, 0, (), ()),
}
EXPECTED = {
    "conv.weight": STORAGE_0.reshape(3, 4),
    "conv.weight_t": STORAGE_0.reshape(3, 4).T,
    "bn.bias": STORAGE_0[[5, 8]],
    "bn.num_batches_tracked": np.array(7, dtype=np.int64),
}


def _zip_checkpoint(path: Path, data_pkl: bytes, storages: dict[str, np.ndarray]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", "little")
        for key, array in storages.items():
            archive.writestr(f"archive/data/{key}", array.tobytes())
    return path


def _legacy_checkpoint(path: Path, data_pkl: bytes, storages: dict[str, np.ndarray]) -> Path:
    sys_info = {
        "protocol_version": LEGACY_PROTOCOL_VERSION,
        "little_endian": True,
        "type_sizes": {"short": 2, "int": 4, "long": 4},
    }
    parts = [
        pickle.dumps(LEGACY_MAGIC_NUMBER, 2),
        pickle.dumps(LEGACY_PROTOCOL_VERSION, 2),
        pickle.dumps(sys_info, 2),
        data_pkl,
        pickle.dumps(list(storages), 2),
    ]
    for array in storages.values():
        parts += [struct.pack("<q", array.size), array.tobytes()]
    path.write_bytes(b"".join(parts))
    return path


WRITERS = {"zip": _zip_checkpoint, "legacy": _legacy_checkpoint}


class _RunsShellCommand:
    """Pickles as a call of os.system: the classic hostile checkpoint (never unpickled normally)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (self.command,))


# --- tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", sorted(WRITERS))
def test_hand_built_checkpoint_gives_tensors_with_views_offsets_and_dtypes(
    layout: str, tmp_path: Path
) -> None:
    path = WRITERS[layout](
        tmp_path / "model.pth", _state_dict_pickle(ENTRIES), {"0": STORAGE_0, "1": STORAGE_1}
    )
    tensors = read_torch_state_dict(path)
    assert list(tensors) == list(EXPECTED)
    for name, expected in EXPECTED.items():
        assert tensors[name].dtype == expected.dtype, name
        assert tensors[name].shape == expected.shape, name
        np.testing.assert_array_equal(tensors[name], expected)


@pytest.mark.parametrize("layout", sorted(WRITERS))
def test_pickle_calling_os_system_is_refused_without_running_it(
    layout: str, tmp_path: Path
) -> None:
    sentinel = tmp_path / "pwned"
    hostile = pickle.dumps({"weight": _RunsShellCommand(f"touch {sentinel}")}, protocol=2)
    path = WRITERS[layout](tmp_path / "model.pth", hostile, {})
    with pytest.raises(UnsafeCheckpointError, match=r"system"):
        read_torch_state_dict(path)
    assert not sentinel.exists()


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("builtins", "eval"),
        ("builtins", "getattr"),
        ("subprocess", "Popen"),
        ("torch.nn.modules.conv", "Conv2d"),
        ("numpy", "load"),
        ("torch", "load"),
    ],
)
def test_any_global_beyond_tensor_rebuilding_is_refused(
    module: str, name: str, tmp_path: Path
) -> None:
    data_pkl = PROTO_2 + _global(module, name) + _tuple(_str("1+1")) + REDUCE + STOP
    path = _zip_checkpoint(tmp_path / "model.pth", data_pkl, {})
    with pytest.raises(UnsafeCheckpointError, match=f"{module}.{name}"):
        read_torch_state_dict(path)


def test_tensor_view_past_the_end_of_its_storage_is_a_format_error(tmp_path: Path) -> None:
    entries = {"w": _tensor("0", "FloatStorage", 12, 10, (3,), (1,))}
    path = _zip_checkpoint(tmp_path / "model.pth", _state_dict_pickle(entries), {"0": STORAGE_0})
    with pytest.raises(CheckpointFormatError, match="runs past"):
        read_torch_state_dict(path)


def test_pickle_that_rewrites_a_tensor_after_building_it_is_refused(tmp_path: Path) -> None:
    """BUILD (``b``) sets attributes on the object below it; tensors do not accept that."""
    tensor = _tensor("0", "FloatStorage", 12, 0, (3,), (1,))
    rewrite = b"}" + _str("offset") + _int(1000) + b"s" + b"b"  # EMPTY_DICT, SETITEM, BUILD
    path = _zip_checkpoint(
        tmp_path / "model.pth", _state_dict_pickle({"w": tensor + rewrite}), {"0": STORAGE_0}
    )
    with pytest.raises(UnsafeCheckpointError, match="set the state of a TensorRef"):
        read_torch_state_dict(path)


def test_truncated_legacy_checkpoint_is_a_format_error(tmp_path: Path) -> None:
    path = _legacy_checkpoint(
        tmp_path / "model.pth", _state_dict_pickle(ENTRIES), {"0": STORAGE_0, "1": STORAGE_1}
    )
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(CheckpointFormatError, match="truncated"):
        read_torch_state_dict(path)


def test_file_that_is_not_a_checkpoint_is_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "photo.pth"
    path.write_bytes(b"\xff\xd8\xff\xe0 not a pickle at all")
    with pytest.raises(CheckpointFormatError):
        read_torch_state_dict(path)


def test_real_torchvision_mobilenet_v2_checkpoint_loads() -> None:
    try:
        path = checkpoint_path("mobilenet_v2", default_cache_dir())
    except PretrainedWeightsUnavailable as exc:
        pytest.skip(f"MobileNetV2 checkpoint not obtainable here: {exc}")
    tensors = read_torch_state_dict(path)
    assert len(tensors) == 314
    assert tensors["features.0.0.weight"].shape == (32, 3, 3, 3)
    assert tensors["classifier.1.weight"].shape == (1000, 1280)
    assert tensors["features.0.0.weight"].dtype == np.float32
    # Trained batch-norm statistics, not an initialiser's zeros and ones.
    assert np.all(tensors["features.18.1.running_var"] > 0)
    assert not np.allclose(tensors["features.18.1.running_mean"], 0)
