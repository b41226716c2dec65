"""Seeded per-landmark splits, held-out landmarks, manifests, links, and the split command."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.cli.split import main
from trainer.data.photos import (
    Photo,
    google_landmarks_photo_path,
    read_landmark_folders,
    sort_photos,
)
from trainer.splits.manifest import MANIFEST_FILE, materialise, read_manifest, write_manifest
from trainer.splits.seeded import Split, hold_out_landmarks, split_per_landmark


@pytest.fixture(autouse=True)
def no_landmark_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """The split command reads the process environment: start each test without LANDMARK_*."""
    for name in list(os.environ):
        if name.startswith("LANDMARK_"):
            monkeypatch.delenv(name)


def photos_of(landmark: str, count: int, root: Path = Path("/data")) -> list[Photo]:
    return [
        Photo(root / landmark / f"{i:03d}.jpg", landmark, landmark.title()) for i in range(count)
    ]


def per_landmark(split: Split, part: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for photo in split.parts[part]:
        counts[photo.landmark_id] = counts.get(photo.landmark_id, 0) + 1
    return counts


SIZES = {"query": 0.2, "val": 0.1, "reference": 3}


def test_split_per_landmark_gives_each_part_its_size() -> None:
    split = split_per_landmark(photos_of("a", 20), SIZES, rest="train", seed=0)
    assert {name: len(p) for name, p in split.parts.items()} == {
        "query": 4,
        "val": 2,
        "reference": 3,
        "train": 11,
    }


def test_split_per_landmark_parts_are_disjoint_and_cover_every_photo() -> None:
    photos = photos_of("a", 20) + photos_of("b", 9)
    split = split_per_landmark(photos, SIZES, rest="train", seed=3)
    listed = [photo for part in split.parts.values() for photo in part]
    assert sort_photos(listed) == sort_photos(photos)


def test_split_per_landmark_ignores_the_input_order() -> None:
    photos = photos_of("a", 30) + photos_of("b", 12)
    shuffled = photos[:]
    random.Random(5).shuffle(shuffled)
    assert split_per_landmark(photos, SIZES, rest="train", seed=1) == split_per_landmark(
        shuffled, SIZES, rest="train", seed=1
    )


def test_split_per_landmark_changes_with_the_seed() -> None:
    photos = photos_of("a", 30)
    first = split_per_landmark(photos, SIZES, rest="train", seed=1)
    second = split_per_landmark(photos, SIZES, rest="train", seed=2)
    assert first.parts["query"] != second.parts["query"]


def test_split_per_landmark_caps_references_and_gives_the_excess_to_the_rest() -> None:
    split = split_per_landmark(
        photos_of("a", 20), {"reference": 0.5}, rest="query", seed=0, max_references=3
    )
    assert (len(split.parts["reference"]), len(split.parts["query"])) == (3, 17)


def test_split_per_landmark_shrinks_the_largest_part_for_a_small_landmark() -> None:
    """5 photos, asking query 1 + val 1 + reference 3: reference gives one up for train."""
    split = split_per_landmark(photos_of("a", 5), SIZES, rest="train", seed=0)
    assert {name: len(p) for name, p in split.parts.items()} == {
        "query": 1,
        "val": 1,
        "reference": 2,
        "train": 1,
    }


def test_split_per_landmark_leaves_out_a_landmark_smaller_than_the_parts() -> None:
    split = split_per_landmark(photos_of("a", 3) + photos_of("b", 8), SIZES, rest="train", seed=0)
    assert split.too_small == ["a"]
    assert all(photo.landmark_id == "b" for part in split.parts.values() for photo in part)


def test_split_per_landmark_rejects_rest_among_the_sized_parts() -> None:
    with pytest.raises(ValueError, match="both sized and the rest"):
        split_per_landmark(photos_of("a", 5), {"train": 0.5}, rest="train", seed=0)


def test_split_per_landmark_rejects_a_fraction_of_one() -> None:
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        split_per_landmark(photos_of("a", 5), {"query": 1.0}, rest="train", seed=0)


def test_hold_out_landmarks_moves_whole_landmarks() -> None:
    photos = [p for name in "abcdefgh" for p in photos_of(name, 4)]
    kept, held_out = hold_out_landmarks(photos, 0.25, seed=0)
    kept_ids = {p.landmark_id for p in kept}
    held_ids = {p.landmark_id for p in held_out}
    assert len(held_ids) == 2
    assert not kept_ids & held_ids
    assert len(kept) + len(held_out) == len(photos)


def test_hold_out_landmarks_never_holds_out_a_landmark_below_min_photos() -> None:
    photos = photos_of("tiny", 1) + photos_of("big", 5) + photos_of("other", 5)
    _, held_out = hold_out_landmarks(photos, 2, seed=0)
    assert {p.landmark_id for p in held_out} == {"big", "other"}


def test_hold_out_landmarks_rejects_more_landmarks_than_are_eligible() -> None:
    with pytest.raises(ValueError, match="cannot hold out 3"):
        hold_out_landmarks(photos_of("a", 4) + photos_of("b", 4), 3, seed=0)


def test_manifest_round_trip_keeps_every_part(tmp_path: Path) -> None:
    root = tmp_path / "data"
    split = split_per_landmark(photos_of("a", 10, root), SIZES, rest="train", seed=0)
    write_manifest(tmp_path / "split.json", split, seed=0, parameters={"x": 1}, data_root=root)
    assert read_manifest(tmp_path / "split.json") == split


def test_manifest_paths_resolve_against_a_moved_data_root(tmp_path: Path) -> None:
    split = split_per_landmark(photos_of("a", 10, tmp_path / "old"), SIZES, rest="train", seed=0)
    write_manifest(tmp_path / "s.json", split, seed=0, parameters={}, data_root=tmp_path / "old")
    moved = read_manifest(tmp_path / "s.json", data_root=tmp_path / "new")
    assert all(
        p.path.is_relative_to(tmp_path / "new") for part in moved.parts.values() for p in part
    )


def test_read_manifest_rejects_other_json(tmp_path: Path) -> None:
    (tmp_path / "other.json").write_text('{"parts": {}}')
    with pytest.raises(ValueError, match="not a split manifest"):
        read_manifest(tmp_path / "other.json")


def make_photo_tree(root: Path, layout: dict[str, int]) -> list[Photo]:
    for landmark, count in layout.items():
        (root / landmark).mkdir(parents=True)
        for i in range(count):
            (root / landmark / f"{i:03d}.jpg").write_bytes(b"x")
    return read_landmark_folders(root)


def test_materialise_makes_folders_the_folder_reader_reads_back(tmp_path: Path) -> None:
    photos = make_photo_tree(tmp_path / "data", {"a": 10, "b": 6})
    split = split_per_landmark(photos, SIZES, rest="train", seed=0)
    folders = materialise(split, tmp_path / "out")
    assert read_landmark_folders(folders["query"]) == [
        Photo(folders["query"] / p.landmark_id / p.path.name, p.landmark_id, p.landmark_name)
        for p in split.parts["query"]
    ]


def test_materialise_twice_is_a_no_op(tmp_path: Path) -> None:
    split = split_per_landmark(
        make_photo_tree(tmp_path / "d", {"a": 6}), SIZES, rest="train", seed=0
    )
    materialise(split, tmp_path / "out")
    materialise(split, tmp_path / "out")
    assert len(list((tmp_path / "out" / "train" / "a").iterdir())) == len(split.parts["train"])


def test_materialise_refuses_to_replace_a_different_file(tmp_path: Path) -> None:
    split = split_per_landmark(
        make_photo_tree(tmp_path / "d", {"a": 6}), SIZES, rest="train", seed=0
    )
    photo = split.parts["query"][0]
    (tmp_path / "out" / "query" / "a").mkdir(parents=True)
    (tmp_path / "out" / "query" / "a" / photo.path.name).write_bytes(b"other")
    with pytest.raises(FileExistsError):
        materialise(split, tmp_path / "out")


def test_split_command_writes_manifest_and_part_folders(tmp_path: Path) -> None:
    make_photo_tree(tmp_path / "data", {name: 8 for name in "abcd"})
    code = main(
        [
            "--data",
            str(tmp_path / "data"),
            "--out",
            str(tmp_path / "s"),
            "--hold-out-landmarks",
            "1",
        ]
    )
    assert code == 0
    split = read_manifest(tmp_path / "s" / MANIFEST_FILE)
    assert {p.landmark_id for p in split.parts["heldout_query"]} | {
        p.landmark_id for p in split.parts["query"]
    } == set("abcd")
    assert sorted(path.name for path in (tmp_path / "s").iterdir()) == sorted(
        [MANIFEST_FILE, "train", "val", "reference", "query", "heldout_reference", "heldout_query"]
    )


def test_split_command_reads_a_google_landmarks_csv(tmp_path: Path) -> None:
    rows = []
    for landmark in ("11", "22"):
        for i in range(6):
            image_id = f"{landmark}{i:04d}ab"
            path = google_landmarks_photo_path(tmp_path / "images", image_id)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x")
            rows.append(f"{image_id},http://x,{landmark}")
    (tmp_path / "train.csv").write_text("id,url,landmark_id\n" + "\n".join(rows) + "\n")
    args = ["--data", str(tmp_path / "images"), "--csv", str(tmp_path / "train.csv")]
    assert main([*args, "--out", str(tmp_path / "s"), "--hold-out-landmarks", "0"]) == 0
    split = read_manifest(tmp_path / "s" / MANIFEST_FILE)
    assert {p.landmark_id for p in split.parts["train"]} == {"11", "22"}


def test_split_command_runs_as_a_module() -> None:
    """``python -m trainer.cli.split`` is the documented command (README, Makefile)."""
    result = subprocess.run(
        [sys.executable, "-m", "trainer.cli.split", "--help"],
        cwd=Path(__file__).resolve().parents[3],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage: python -m trainer.cli.split")
    assert "[env: LANDMARK_SPLIT_SEED]" in result.stdout
