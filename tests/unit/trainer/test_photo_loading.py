"""Tests for trainer.data.loading: threaded decoding that reports bad photos."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from schemas.errors import InputError, ReasonCode
from schemas.preprocessing import PreprocessingSpec
from trainer.data.loading import iter_photo_batches, load_photo, load_photos

REPO_ROOT = Path(__file__).resolve().parents[3]
SHARED = Path(os.environ.get("LANDMARK_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
SPEC = PreprocessingSpec(input_size=32)


def write_jpeg(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> Path:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="JPEG", quality=95)
    path.write_bytes(buffer.getvalue())
    return path


def test_load_photos_decodes_to_square_uint8_rgb(tmp_path: Path) -> None:
    paths = [write_jpeg(tmp_path / f"{i}.jpg", (200, 10 * i, 0)) for i in range(3)]
    loaded = load_photos(paths, SPEC, workers=2)
    assert loaded.images.shape == (3, 32, 32, 3)
    assert loaded.images.dtype == np.uint8
    assert loaded.ok_indices == [0, 1, 2]


def test_load_photos_keeps_the_input_order(tmp_path: Path) -> None:
    paths = [write_jpeg(tmp_path / f"{i}.jpg", (0, 0, 40 * i)) for i in range(5)]
    loaded = load_photos(paths, SPEC, workers=3)
    blues = loaded.images[:, 16, 16, 2].astype(int)
    assert np.all(np.abs(blues - [0, 40, 80, 120, 160]) <= 3)


def test_load_photos_reports_a_bad_photo_and_keeps_the_rest(tmp_path: Path) -> None:
    good = write_jpeg(tmp_path / "good.jpg", (1, 2, 3))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"this is not a photo")
    loaded = load_photos([bad, good], SPEC)
    assert loaded.ok_indices == [1]
    assert len(loaded.images) == 1
    ((path, error),) = loaded.failures
    assert path == bad
    assert error.reason in {ReasonCode.UNSUPPORTED_FORMAT, ReasonCode.UNDECODABLE_IMAGE}


def test_load_photo_reports_an_unreadable_file_as_unreachable(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        load_photo(tmp_path / "missing.jpg", SPEC)
    assert caught.value.reason == ReasonCode.REFERENCE_UNREACHABLE


def test_load_photos_rejects_zero_workers(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="workers"):
        load_photos([], SPEC, workers=0)


def test_iter_photo_batches_indexes_into_the_whole_sequence(tmp_path: Path) -> None:
    paths = [write_jpeg(tmp_path / f"{i}.jpg", (i, i, i)) for i in range(5)]
    (tmp_path / "2.jpg").write_bytes(b"broken")
    batches = list(iter_photo_batches(paths, SPEC, batch_size=2, workers=2))
    assert [batch.ok_indices for batch in batches] == [[0, 1], [3], [4]]
    assert [len(batch.failures) for batch in batches] == [0, 1, 0]


def test_iter_photo_batches_of_nothing_yields_nothing() -> None:
    assert list(iter_photo_batches([], SPEC, batch_size=4)) == []


@pytest.mark.skipif(not (SHARED / "odd-formats").is_dir(), reason=f"{SHARED}/odd-formats not found")
def test_load_photos_decodes_the_real_odd_format_files() -> None:
    """PNG/BMP/WEBP/MPO contents behind .jpg names decode by their bytes, not their names."""
    paths = sorted((SHARED / "odd-formats").iterdir())
    loaded = load_photos(paths, SPEC)
    assert loaded.failures == []
    assert loaded.images.shape == (len(paths), 32, 32, 3)


def _good_and_cut_jpeg(folder: Path) -> tuple[Path, Path]:
    """A noise JPEG that decodes, and its first 200 bytes, which do not."""
    good = folder / "good.jpg"
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(good)
    broken = folder / "broken.jpg"
    broken.write_bytes(good.read_bytes()[:200])
    return good, broken


def test_photos_that_cannot_be_decoded_are_set_apart(tmp_path: Path) -> None:
    from trainer.data.loading import decodable_photos
    from trainer.data.photos import Photo

    good, broken = _good_and_cut_jpeg(tmp_path)
    photos = [Photo(good, "a", "A"), Photo(broken, "a", "A"), Photo(good, "b", "B")]
    usable, failed = decodable_photos(photos, PreprocessingSpec(input_size=32))
    assert usable == [photos[0], photos[2]]
    assert [photo for photo, _ in failed] == [photos[1]]


def test_a_split_read_from_disk_loses_its_undecodable_photos(tmp_path: Path) -> None:
    from trainer.cli.settings import decodable_split
    from trainer.data.photos import Photo
    from trainer.splits.seeded import Split

    good, broken = _good_and_cut_jpeg(tmp_path)
    split = Split(
        parts={"train": [Photo(good, "a", "A")], "query": [Photo(broken, "a", "A")]},
        too_small=["z"],
    )
    cleaned = decodable_split(split, input_size=32)
    assert cleaned.parts == {"train": [Photo(good, "a", "A")], "query": []}
    assert cleaned.too_small == ["z"]
