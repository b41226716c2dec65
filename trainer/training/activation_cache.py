"""Activations of the frozen lower stages, computed once per photo and augmented view.

Fine-tuning only the upper stages of a backbone needs the frozen stages' output for every
training photo, and that output does not change during training. Running the frozen stages once
per photo and per augmented view, storing the result on disk and training the upper stages on it
is the standard remedy on a CPU (about 5 s per batch end to end otherwise). Because the frozen
part has no trainable weights and its BatchNormalization runs in inference mode, training on
the cache is the same network as training end to end on the same views.

View 0 of every photo is the plain, un-augmented photo (what evaluation and the worker see);
views 1..V are :func:`trainer.data.augmentation.augmented_view` of it. The cache file is keyed by a
hash of everything that determines its contents: the frozen weights, the photos (path, size,
modification time), the input size, the views, the augmentation seed and settings.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from trainer.data.augmentation import AugmentationSettings, augmented_view, view_rng

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ActivationCacheSettings:
    """How to build the cache.

    Attributes:
        cache_dir: folder of the cache files (under ``.cache/activations`` by default).
        augmented_views: augmented views per photo, besides the plain view 0.
        augmentation_seed: seed of the augmented views.
        augmentation: transform ranges.
        dtype: storage dtype: ``float16`` halves the disk and memory use; the embeddings it
            gives differ from float32 storage by well under 1e-3.
        batch_size: photos per forward pass of the frozen part.
        workers: photo decoding threads.
        decode_margin: augmented views are cut from a photo decoded this much larger than the
            input size, so crops keep detail.
    """

    cache_dir: Path
    augmented_views: int = 4
    augmentation_seed: int = 0
    augmentation: AugmentationSettings = field(default_factory=AugmentationSettings)
    dtype: str = "float16"
    batch_size: int = 32
    workers: int = 2
    decode_margin: float = 1.15


def photo_key(path: Path) -> str:
    """A photo's identity for augmentation seeds: landmark folder and file name."""
    return f"{path.parent.name}/{path.name}"


def weights_digest(model: keras.Model) -> str:
    """sha256 of a model's weights (values and shapes, in order)."""
    digest = hashlib.sha256()
    for weight in model.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(weight))
        digest.update(str(value.shape).encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def cache_key(
    frozen: keras.Model,
    paths: Sequence[Path],
    input_size: int,
    settings: ActivationCacheSettings,
    description: dict[str, Any],
) -> str:
    """The hash naming a cache file (first 24 hex digits of a sha256)."""
    photos = []
    for path in paths:
        stat = Path(path).stat()
        photos.append([str(path), stat.st_size, stat.st_mtime_ns])
    material = {
        "description": description,
        "frozen_weights": weights_digest(frozen),
        "frozen_output": list(frozen.output_shape[1:]),
        "photos": photos,
        "input_size": input_size,
        "augmented_views": settings.augmented_views,
        "augmentation_seed": settings.augmentation_seed,
        "augmentation": settings.augmentation.to_dict(),
        "dtype": settings.dtype,
        "decode_margin": settings.decode_margin,
        "format": 1,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:24]


def photo_views(
    paths: Sequence[Path], input_size: int, settings: ActivationCacheSettings
) -> np.ndarray:
    """Decoded views of photos: uint8 ``(n, 1 + V, S, S, 3)``; view 0 is the plain photo."""
    plain = _decode_all(paths, input_size, settings.workers)
    views = [plain]
    if settings.augmented_views:
        large_size = round(input_size * settings.decode_margin)
        large = _decode_all(paths, large_size, settings.workers)
        for view in range(1, settings.augmented_views + 1):
            views.append(
                np.stack(
                    [
                        augmented_view(
                            photo,
                            input_size,
                            view_rng(settings.augmentation_seed, photo_key(Path(path)), view),
                            settings.augmentation,
                        )
                        for photo, path in zip(large, paths, strict=True)
                    ]
                )
            )
    return np.stack(views, axis=1)


def _decode_all(paths: Sequence[Path], size: int, workers: int) -> np.ndarray:
    """Decode photos at one size; a photo that fails is an error (training sets are vetted)."""
    from schemas.preprocessing import PreprocessingSpec
    from trainer.data.loading import load_photos

    loaded = load_photos(list(paths), PreprocessingSpec(input_size=size), workers)
    if loaded.failures:
        listed = "; ".join(f"{path}: {error}" for path, error in loaded.failures[:5])
        raise ValueError(f"{len(loaded.failures)} photo(s) could not be decoded: {listed}")
    return np.asarray(loaded.images)


def frozen_activations(frozen: keras.Model, photos: np.ndarray, batch_size: int) -> np.ndarray:
    """Run the frozen part on uint8 photos ``(n, S, S, 3)``; returns float32 activations."""
    out = []
    for start in range(0, len(photos), batch_size):
        batch = np.asarray(photos[start : start + batch_size], np.float32)
        out.append(keras.ops.convert_to_numpy(frozen(batch, training=False)))
    return np.concatenate(out).astype(np.float32)


def cached_activations(
    frozen: keras.Model,
    paths: Sequence[Path],
    input_size: int,
    settings: ActivationCacheSettings,
    description: dict[str, Any],
    progress: Progress | None = None,
) -> np.ndarray:
    """The frozen part's activations for every photo and view, from the cache or computed.

    Args:
        frozen: the frozen part of the embedding model.
        paths: the photos, in the order the result rows follow.
        input_size: side of the square model input.
        settings: views, seeds and storage.
        description: what else names the cache (backbone, stage names); goes into the key.
        progress: called with (photos done, photos total) while computing.

    Returns:
        Array ``(n, 1 + V, h, w, c)`` of ``settings.dtype`` (memory-mapped from the cache file).
    """
    key = cache_key(frozen, paths, input_size, settings, description)
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    target = settings.cache_dir / f"{key}.npy"
    if target.exists():
        return np.load(target, mmap_mode="r")
    views = 1 + settings.augmented_views
    shape = (len(paths), views, *tuple(int(d) for d in frozen.output_shape[1:]))
    partial = target.with_name(f"{key}.{os.getpid()}.partial.npy")
    store = np.lib.format.open_memmap(partial, mode="w+", dtype=settings.dtype, shape=shape)
    chunk = max(1, settings.batch_size)
    for start in range(0, len(paths), chunk):
        chunk_paths = list(paths[start : start + chunk])
        photos = photo_views(chunk_paths, input_size, settings)
        flat = photos.reshape(-1, *photos.shape[2:])
        acts = frozen_activations(frozen, flat, settings.batch_size)
        store[start : start + len(chunk_paths)] = acts.reshape(len(chunk_paths), views, *shape[2:])
        if progress is not None:
            progress(start + len(chunk_paths), len(paths))
    store.flush()
    del store
    os.replace(partial, target)
    return np.load(target, mmap_mode="r")
