"""Load photo files into model-ready ``uint8`` arrays, in threads, reporting bad photos.

Decoding goes through :func:`schemas.preprocessing.decode_photo`, the same code the worker runs,
so a model is trained and evaluated on exactly the pixels it will see in production. Pillow
releases the GIL while it decodes and resizes, so threads use several cores.

A photo that cannot be read or decoded is not an exception here: it comes back as
``(path, InputError)`` in ``failures`` and the caller decides (skip it, count it, report it).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np

from schemas.errors import InputError, ReasonCode
from schemas.preprocessing import PreprocessingSpec, decode_photo
from trainer.data.photos import Photo


class LoadedPhotos(NamedTuple):
    """Decoded photos and what failed.

    Attributes:
        images: ``uint8`` array ``(len(ok_indices), S, S, 3)``, RGB.
        ok_indices: for each row of ``images``, the index of its path in the input sequence.
        failures: ``(path, error)`` for each path that could not be read or decoded.
    """

    images: np.ndarray
    ok_indices: list[int]
    failures: list[tuple[Path, InputError]]


def load_photo(path: Path | str, spec: PreprocessingSpec) -> np.ndarray:
    """Read and decode one photo file.

    Raises:
        InputError: ``reference_unreachable`` if the file cannot be read, else what
            :func:`decode_photo` raises (``undecodable_image``, ``unsupported_format``, …).
    """
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise InputError(
            ReasonCode.REFERENCE_UNREACHABLE, f"cannot read {path}: {error.strerror or error}"
        ) from error
    return decode_photo(data, spec)


def _collect(
    paths: Sequence[Path], offset: int, futures: Sequence[Future[np.ndarray]], size: int
) -> LoadedPhotos:
    images = np.empty((len(futures), size, size, 3), dtype=np.uint8)
    ok: list[int] = []
    failures: list[tuple[Path, InputError]] = []
    for position, future in enumerate(futures):
        try:
            image = future.result()
        except InputError as error:
            failures.append((paths[offset + position], error))
            continue
        images[len(ok)] = image
        ok.append(offset + position)
    return LoadedPhotos(images[: len(ok)], ok, failures)


def _check(workers: int, batch_size: int = 1) -> None:
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")


def load_photos(
    paths: Sequence[Path | str], spec: PreprocessingSpec, workers: int = 2
) -> LoadedPhotos:
    """Decode all photos at once (use :func:`iter_photo_batches` for large sets).

    Args:
        paths: photo files.
        spec: the preprocessing the model expects.
        workers: decoding threads.

    Returns:
        ``(images, ok_indices, failures)``, see :class:`LoadedPhotos`.
    """
    _check(workers)
    path_list = [Path(path) for path in paths]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="photo-decode") as pool:
        futures = [pool.submit(load_photo, path, spec) for path in path_list]
        return _collect(path_list, 0, futures, spec.input_size)


def iter_photo_batches(
    paths: Sequence[Path | str], spec: PreprocessingSpec, batch_size: int, workers: int = 2
) -> Iterator[LoadedPhotos]:
    """Decode photos batch by batch; the next batch decodes while the caller uses this one.

    Yields:
        One :class:`LoadedPhotos` per ``batch_size`` paths (fewer rows if some failed);
        ``ok_indices`` index into the whole ``paths`` sequence.
    """
    _check(workers, batch_size)
    path_list = [Path(path) for path in paths]
    starts = range(0, len(path_list), batch_size)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="photo-decode") as pool:

        def submit(start: int) -> list[Future[np.ndarray]]:
            batch = path_list[start : start + batch_size]
            return [pool.submit(load_photo, path, spec) for path in batch]

        pending = submit(0) if path_list else []
        for start in starts:
            current = pending
            following = start + batch_size
            pending = submit(following) if following < len(path_list) else []
            yield _collect(path_list, start, current, spec.input_size)


def decodable_photos(
    photos: Sequence[Photo], spec: PreprocessingSpec, workers: int = 2
) -> tuple[list[Photo], list[tuple[Photo, InputError]]]:
    """Split photos into those that decode under ``spec`` and those that do not.

    Collections scraped from the web hold the odd cut or broken file; a training run leaves them
    out (and says so) instead of failing after minutes of work.

    Returns:
        ``(usable photos in input order, (photo, error) for each photo left out)``.
    """
    usable: list[Photo] = []
    failed: list[tuple[Photo, InputError]] = []
    batch = 256
    for start in range(0, len(photos), batch):
        chunk = list(photos[start : start + batch])
        loaded = load_photos([p.path for p in chunk], spec, workers)
        ok = set(loaded.ok_indices)
        usable.extend(p for i, p in enumerate(chunk) if i in ok)
        errors = {Path(path): error for path, error in loaded.failures}
        failed.extend((p, errors[Path(p.path)]) for i, p in enumerate(chunk) if i not in ok)
    return usable, failed
