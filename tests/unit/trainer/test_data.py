"""Tests for trainer.data.photos: landmark-folder and Google-Landmarks readers, cap, summary."""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path

import pytest

from trainer.data.photos import (
    Photo,
    cap_per_landmark,
    google_landmarks_photo_path,
    landmark_name_from_folder,
    read_google_landmarks_csv,
    read_landmark_folders,
    read_landmark_names,
    summarize,
)

REPO_ROOT = Path(__file__).resolve().parents[3]
DATA_DIR = Path(
    os.environ.get("LANDMARK_DATA_DIR", REPO_ROOT.parent / "shared" / "data" / "landmarks")
)


def make_tree(root: Path, layout: dict[str, list[str]]) -> Path:
    for landmark, names in layout.items():
        folder = root / landmark
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            (folder / name).write_bytes(b"not decoded by the reader")
    return root


def photos_of(landmark: str, count: int, root: Path = Path("/data")) -> list[Photo]:
    return [
        Photo(root / landmark / f"{landmark}_{i:03d}.jpg", landmark, landmark) for i in range(count)
    ]


def test_read_landmark_folders_lists_photos_with_folder_as_landmark(tmp_path: Path) -> None:
    make_tree(tmp_path, {"big_ben": ["b.jpg", "a.JPEG"], "eiffel_tower": ["c.png"]})
    photos = read_landmark_folders(tmp_path)
    assert [(p.path.name, p.landmark_id, p.landmark_name) for p in photos] == [
        ("a.JPEG", "big_ben", "big ben"),
        ("b.jpg", "big_ben", "big ben"),
        ("c.png", "eiffel_tower", "eiffel tower"),
    ]


def test_read_landmark_folders_skips_hidden_and_non_photo_files(tmp_path: Path) -> None:
    make_tree(
        tmp_path, {"tower": ["a.jpg", ".b.jpg", "notes.txt", "Thumbs.db"], ".cache": ["x.jpg"]}
    )
    (tmp_path / "loose.jpg").write_bytes(b"x")
    assert [p.path.name for p in read_landmark_folders(tmp_path)] == ["a.jpg"]


def test_read_landmark_folders_follows_symlinked_photos(tmp_path: Path) -> None:
    make_tree(tmp_path / "src", {"tower": ["a.jpg"]})
    (tmp_path / "links" / "tower").mkdir(parents=True)
    (tmp_path / "links" / "tower" / "a.jpg").symlink_to(tmp_path / "src" / "tower" / "a.jpg")
    assert len(read_landmark_folders(tmp_path / "links")) == 1


def test_read_landmark_folders_rejects_missing_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_landmark_folders(tmp_path / "nowhere")


def test_read_landmark_folders_rejects_folder_without_photos(tmp_path: Path) -> None:
    make_tree(tmp_path, {"tower": ["readme.md"]})
    with pytest.raises(ValueError, match="no photos"):
        read_landmark_folders(tmp_path)


def test_landmark_name_from_folder_turns_underscores_into_single_spaces() -> None:
    assert landmark_name_from_folder("charar_e__sharif") == "charar e sharif"


def write_csv(path: Path, rows: list[str], header: str = "id,url,landmark_id") -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def place_google_photo(images_root: Path, image_id: str) -> Path:
    path = google_landmarks_photo_path(images_root, image_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"jpeg")
    return path


def test_google_landmarks_photo_path_nests_by_first_three_characters(tmp_path: Path) -> None:
    assert google_landmarks_photo_path(tmp_path, "abc123") == tmp_path / "a/b/c/abc123.jpg"


def test_google_landmarks_photo_path_rejects_ids_that_escape_the_root(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a Google-Landmarks image id"):
        google_landmarks_photo_path(tmp_path, "../../etc/passwd")


def test_read_google_landmarks_csv_finds_photos_on_disk(tmp_path: Path) -> None:
    place_google_photo(tmp_path, "abc123")
    place_google_photo(tmp_path, "f00d42")
    csv_path = write_csv(tmp_path / "train.csv", ["abc123,http://x/1,7", "f00d42,http://x/2,3"])
    listing = read_google_landmarks_csv(csv_path, tmp_path)
    assert [(p.path.name, p.landmark_id) for p in listing.photos] == [
        ("f00d42.jpg", "3"),
        ("abc123.jpg", "7"),
    ]
    assert listing.missing == []


def test_read_google_landmarks_csv_reports_missing_photos_without_failing(tmp_path: Path) -> None:
    place_google_photo(tmp_path, "abc123")
    csv_path = write_csv(
        tmp_path / "train.csv", ["abc123,http://x/1,7", "dead99,http://x/2,7", "beef00,None,None"]
    )
    listing = read_google_landmarks_csv(csv_path, tmp_path)
    assert len(listing.photos) == 1
    assert [(m.row_number, m.image_id, m.reason) for m in listing.missing] == [
        (3, "dead99", "photo not on disk"),
        (4, "beef00", "no landmark id"),
    ]


def test_read_google_landmarks_csv_takes_names_from_category_urls(tmp_path: Path) -> None:
    place_google_photo(tmp_path, "abc123")
    csv_path = write_csv(tmp_path / "train.csv", ["abc123,http://x/1,7"])
    names = write_csv(
        tmp_path / "names.csv",
        ["7,http://commons.wikimedia.org/wiki/Category:Haleakala_National_Park"],
        header="landmark_id,category",
    )
    listing = read_google_landmarks_csv(csv_path, tmp_path, names_csv=names)
    assert listing.photos[0].landmark_name == "Haleakala National Park"


def test_read_google_landmarks_csv_rejects_a_csv_without_landmark_column(tmp_path: Path) -> None:
    csv_path = write_csv(tmp_path / "index.csv", ["abc123,http://x/1"], header="id,url")
    with pytest.raises(ValueError, match="id,url,landmark_id"):
        read_google_landmarks_csv(csv_path, tmp_path)


def test_read_landmark_names_rejects_a_csv_without_name_column(tmp_path: Path) -> None:
    names = write_csv(tmp_path / "names.csv", ["7,x"], header="landmark_id,label")
    with pytest.raises(ValueError, match="landmark_id and name"):
        read_landmark_names(names)


def test_cap_per_landmark_keeps_at_most_n_of_each_landmark() -> None:
    photos = photos_of("a", 10) + photos_of("b", 2)
    capped = cap_per_landmark(photos, 3, seed=0)
    assert summarize(capped).to_dict()["max_per_landmark"] == 3
    assert sum(p.landmark_id == "b" for p in capped) == 2


def test_cap_per_landmark_ignores_the_input_order() -> None:
    photos = photos_of("a", 20) + photos_of("b", 15)
    shuffled = photos[:]
    random.Random(1).shuffle(shuffled)
    assert cap_per_landmark(photos, 5, seed=7) == cap_per_landmark(shuffled, 5, seed=7)


def test_cap_per_landmark_does_not_depend_on_where_the_data_lives() -> None:
    here = cap_per_landmark(photos_of("a", 20, Path("/one")), 5, seed=7)
    there = cap_per_landmark(photos_of("a", 20, Path("/two/deeper")), 5, seed=7)
    assert [p.path.name for p in here] == [p.path.name for p in there]


def test_cap_per_landmark_choice_changes_with_the_seed() -> None:
    photos = photos_of("a", 50)
    assert cap_per_landmark(photos, 5, seed=0) != cap_per_landmark(photos, 5, seed=1)


def test_cap_per_landmark_rejects_a_cap_below_one() -> None:
    with pytest.raises(ValueError, match="at least one"):
        cap_per_landmark(photos_of("a", 3), 0, seed=0)


def test_summarize_counts_landmarks_and_photos_per_landmark() -> None:
    summary = summarize(photos_of("a", 1) + photos_of("b", 4) + photos_of("c", 10))
    assert summary.to_dict() == {
        "landmarks": 3,
        "photos": 15,
        "min_per_landmark": 1,
        "median_per_landmark": 4.0,
        "max_per_landmark": 10,
    }


@pytest.mark.skipif(not DATA_DIR.is_dir(), reason=f"real landmark photos not found at {DATA_DIR}")
def test_read_landmark_folders_reads_the_shared_landmark_photos() -> None:
    """Every landmark and photo that the data's own ``sources.csv`` lists is read."""
    summary = summarize(read_landmark_folders(DATA_DIR))
    sources = DATA_DIR.parent / "sources.csv"
    if sources.is_file():
        with sources.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert summary.landmarks == len(rows)
        assert summary.photos == sum(int(row["photos"]) for row in rows)
    assert summary.landmarks >= 54
    assert summary.min_per_landmark == 8
    assert summary.max_per_landmark == 264
