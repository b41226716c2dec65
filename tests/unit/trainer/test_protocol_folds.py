"""Source-held-out folds on synthetic photo lists (no images needed)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from trainer.data.photos import Photo
from trainer.protocol.folds import (
    FoldPlan,
    calibration_holdout,
    evaluation_photos,
    make_fold,
    make_folds,
    read_sources,
    trained_roles,
    validation_count,
)

#: landmark → (source, photos)
LANDMARKS = {
    "a_big": ("north", 60),
    "a_mid": ("north", 30),
    "a_small": ("north", 5),
    "b_big": ("south", 45),
    "b_tiny": ("south", 2),
    "c_one": ("east", 50),
    "c_two": ("east", 26),
}
SOURCES = {landmark: source for landmark, (source, _) in LANDMARKS.items()}
PLAN = FoldPlan(references=3, queries=20, unseen_queries=40, val_share=0.1, seed=7)


def photos_of(landmarks: dict[str, tuple[str, int]] = LANDMARKS) -> list[Photo]:
    return [
        Photo(Path(f"/data/{landmark}/{index:03d}.jpg"), landmark, landmark.replace("_", " "))
        for landmark, (_, count) in landmarks.items()
        for index in range(count)
    ]


def roles(fold) -> dict[str, tuple[Photo, ...]]:
    return {
        "gallery": fold.gallery,
        "trained_queries": fold.trained_queries,
        "unseen_queries": fold.unseen_queries,
        "val": fold.val,
        "train": fold.train,
    }


@pytest.mark.parametrize("held_out", ["north", "south", "east"])
def test_no_photo_plays_two_roles(held_out):
    fold = make_fold(photos_of(), SOURCES, held_out, PLAN)
    seen = Counter(photo for photos in roles(fold).values() for photo in photos)
    assert max(seen.values()) == 1


@pytest.mark.parametrize("held_out", ["north", "south", "east"])
def test_no_unseen_source_photo_is_trained_or_validated_on(held_out):
    fold = make_fold(photos_of(), SOURCES, held_out, PLAN)
    assert all(SOURCES[p.landmark_id] != held_out for p in fold.train + fold.val)
    assert all(SOURCES[p.landmark_id] != held_out for p in fold.trained_queries)
    assert all(SOURCES[p.landmark_id] == held_out for p in fold.unseen_queries)


def test_every_landmark_has_its_references_in_the_one_gallery():
    fold = make_fold(photos_of(), SOURCES, "east", PLAN)
    per_landmark = Counter(p.landmark_id for p in fold.gallery)
    assert per_landmark == {lm: min(3, count) for lm, (_, count) in LANDMARKS.items()}


def test_gallery_is_the_same_in_every_fold():
    folds = make_folds(photos_of(), SOURCES, PLAN)
    assert len({fold.gallery for fold in folds}) == 1


def test_counts_of_a_large_trained_landmark():
    references, queries, val, train = trained_roles(
        [p for p in photos_of() if p.landmark_id == "a_big"], PLAN
    )
    assert (len(references), len(queries), len(val), len(train)) == (3, 20, 6, 31)


def test_counts_of_an_unseen_landmark_are_capped_at_the_unseen_queries():
    fold = make_fold(photos_of(), SOURCES, "north", PLAN)
    per_landmark = Counter(p.landmark_id for p in fold.unseen_queries)
    assert per_landmark == {"a_big": 40, "a_mid": 27, "a_small": 2}


def test_small_landmarks_fill_references_then_queries_then_training():
    fold = make_fold(photos_of(), SOURCES, "east", PLAN)
    by_role = {name: Counter(p.landmark_id for p in photos) for name, photos in roles(fold).items()}
    # b_tiny (2 photos): references only; a_small (5): 3 references, 2 queries, nothing to train.
    assert by_role["gallery"]["b_tiny"] == 2 and by_role["trained_queries"]["b_tiny"] == 0
    assert by_role["trained_queries"]["a_small"] == 2 and by_role["train"]["a_small"] == 0
    # a_mid (30): 3 + 20, then 7 left: 3 validation (10 % of 30), 4 training.
    assert (by_role["val"]["a_mid"], by_role["train"]["a_mid"]) == (3, 4)


def test_validation_keeps_two_training_photos_and_takes_at_least_one():
    assert validation_count(total=24, left=1, share=0.1) == 0
    assert validation_count(total=25, left=2, share=0.1) == 0
    assert validation_count(total=26, left=3, share=0.1) == 1
    assert validation_count(total=200, left=177, share=0.1) == 20
    assert validation_count(total=200, left=177, share=0.0) == 0


def test_every_validated_landmark_is_trained_on():
    for fold in make_folds(photos_of(), SOURCES, PLAN):
        trained = Counter(p.landmark_id for p in fold.train)
        assert all(trained[p.landmark_id] >= 2 for p in fold.val)


def test_landmark_lists_follow_the_sources():
    fold = make_fold(photos_of(), SOURCES, "south", PLAN)
    assert fold.unseen_landmarks == ("b_big", "b_tiny")
    assert fold.trained_landmarks == ("a_big", "a_mid", "a_small", "c_one", "c_two")


def test_folds_are_deterministic_for_a_seed_and_change_with_it():
    first = make_folds(photos_of(), SOURCES, PLAN)
    again = make_folds(list(reversed(photos_of())), SOURCES, PLAN)
    other = make_folds(photos_of(), SOURCES, FoldPlan(seed=8))
    assert first == again
    assert first[0].gallery != other[0].gallery


def test_one_fold_per_source_or_only_those_asked():
    assert [f.held_out for f in make_folds(photos_of(), SOURCES, PLAN)] == [
        "east",
        "north",
        "south",
    ]
    chosen = make_folds(photos_of(), SOURCES, PLAN, held_out=("south",))
    assert [f.held_out for f in chosen] == ["south"]


def test_an_unknown_held_out_source_is_an_error():
    with pytest.raises(ValueError, match="unknown source"):
        make_folds(photos_of(), SOURCES, PLAN, held_out=("west",))


def test_a_landmark_without_a_source_is_an_error():
    sources = {lm: s for lm, s in SOURCES.items() if lm != "c_two"}
    with pytest.raises(ValueError, match="no source: c_two"):
        make_fold(photos_of(), sources, "east", PLAN)


def test_evaluation_photos_cover_every_plainly_embedded_photo_once():
    folds = make_folds(photos_of(), SOURCES, PLAN)
    table = evaluation_photos(folds)
    assert len(table) == len(set(table))
    for fold in folds:
        embedded = fold.gallery + fold.trained_queries + fold.unseen_queries + fold.val
        assert set(embedded) <= set(table)


def test_calibration_holdout_is_a_seeded_share_of_validated_landmarks():
    fold = make_fold(photos_of(), SOURCES, "south", PLAN)
    validated = {p.landmark_id for p in fold.val}
    held = calibration_holdout(fold, 0.2, seed=0)
    assert len(held) == 1 and set(held) <= validated
    assert calibration_holdout(fold, 0.2, seed=0) == held
    assert calibration_holdout(fold, 0.0, seed=0) == ()
    assert len(calibration_holdout(fold, 0.9, seed=0)) == len(validated) - 1


def test_read_sources(tmp_path):
    csv_path = tmp_path / "sources.csv"
    csv_path.write_text("landmark,source,photos\na,north,3\nb,south,4\n", encoding="utf-8")
    assert read_sources(csv_path) == {"a": "north", "b": "south"}


def test_read_sources_rejects_a_landmark_with_two_sources(tmp_path):
    csv_path = tmp_path / "sources.csv"
    csv_path.write_text("landmark,source\na,north\na,south\n", encoding="utf-8")
    with pytest.raises(ValueError, match="two sources"):
        read_sources(csv_path)
