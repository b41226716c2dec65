"""Tests for landmark-evaluate (trainer.cli.evaluate, trainer.evaluation.models and .report).

The fast tests evaluate a small real Keras model (mean colour → unit vector), exported with
trainer.model.export, on synthetic photos whose landmarks differ by colour, so the right answers
are known. A slow test runs the pretrained MobileNetV2 on real landmark photos.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from schemas.manifest import ModelManifest
from schemas.preprocessing import PreprocessingSpec
from schemas.vote import VoteSettings
from trainer.cli.evaluate import main
from trainer.evaluation.models import parse_model_argument, pretrained_input_size
from trainer.evaluation.report import grid_queries

REPO_ROOT = Path(__file__).resolve().parents[3]
DATA_DIR = Path(
    os.environ.get("LANDMARK_DATA_DIR", REPO_ROOT.parent / "shared" / "data" / "landmarks")
)


@pytest.fixture(autouse=True)
def no_landmark_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command reads the process environment: start each test without LANDMARK_* set."""
    for name in list(os.environ):
        if name.startswith("LANDMARK_"):
            monkeypatch.delenv(name)


COLOURS = {"red_fort": (200, 30, 30), "green_gate": (30, 190, 40), "blue_mosque": (30, 40, 200)}


def write_photos(root: Path, per_landmark: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for landmark, colour in COLOURS.items():
        (root / landmark).mkdir(parents=True)
        for i in range(per_landmark):
            pixels = np.clip(np.array(colour) + rng.normal(0, 25, (48, 64, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(root / landmark / f"{i}.jpg")


def export_mean_colour_model(out_dir: Path) -> Path:
    import keras

    from trainer.model.export import export_model

    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.UnitNormalization(),
        ],
        name="mean_colour",
    )
    export_model(
        model,
        backbone="mean_colour",
        out_dir=out_dir,
        vote=VoteSettings(k=3, weighting="uniform", threshold=0.5, rule="weighted_knn"),
    )
    return out_dir


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str]:
    """One run of landmark-evaluate; returns (output folder, exit code, stdout)."""
    root = tmp_path_factory.mktemp("evaluate")
    write_photos(root / "references", 4, seed=0)
    write_photos(root / "queries", 3, seed=1)
    (root / "queries" / "red_fort" / "broken.jpg").write_bytes(b"not a photo")
    export = export_mean_colour_model(root / "export")
    import contextlib
    import io

    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout), pytest.MonkeyPatch.context() as patch:
        for name in [name for name in os.environ if name.startswith("LANDMARK_")]:
            patch.delenv(name)
        code = main(
            [
                "--model",
                f"colour={export}",
                "--references",
                str(root / "references"),
                "--queries",
                str(root / "queries"),
                "--out",
                str(root / "out"),
                "--grid-queries",
                "3",
                "--grid-neighbours",
                "4",
            ]
        )
    return root / "out", code, stdout.getvalue()


def test_evaluate_exits_zero_and_writes_its_outputs(evaluated: tuple[Path, int, str]) -> None:
    out, code, _ = evaluated
    assert code == 0
    names = {path.name for path in out.iterdir()}
    assert {
        "metrics.json",
        "hit_at_k.png",
        "retrieval_grid.png",
        "retrieval_grid_colour.png",
    } <= names


def test_evaluate_finds_every_colour_landmark_at_top_1(evaluated: tuple[Path, int, str]) -> None:
    metrics = json.loads((evaluated[0] / "metrics.json").read_text())
    assert metrics["models"]["colour"]["hit_at_k"]["1"] == 1.0


def test_evaluate_reports_exact_random_baseline(evaluated: tuple[Path, int, str]) -> None:
    """12 references, 4 of each landmark: random hit@1 = 4/12."""
    metrics = json.loads((evaluated[0] / "metrics.json").read_text())
    assert metrics["random"]["hit_at_k"]["1"] == pytest.approx(1 / 3)
    assert len(metrics["ks"]) == 50


def test_evaluate_measures_the_vote_with_the_manifest_settings(
    evaluated: tuple[Path, int, str],
) -> None:
    vote = json.loads((evaluated[0] / "metrics.json").read_text())["models"]["colour"]["vote"]
    assert vote["settings"] == {
        "k": 3,
        "weighting": "uniform",
        "threshold": 0.5,
        "rule": "weighted_knn",
    }
    assert (vote["accuracy"], vote["unknown_rate"]) == (1.0, 0.0)
    assert len(vote["sweep"]) == 21


def test_evaluate_reports_gap_of_a_perfect_ranking_as_one(evaluated: tuple[Path, int, str]) -> None:
    metrics = json.loads((evaluated[0] / "metrics.json").read_text())
    assert metrics["models"]["colour"]["gap"] == pytest.approx(1.0)


def test_evaluate_reports_and_skips_an_undecodable_query(evaluated: tuple[Path, int, str]) -> None:
    queries = json.loads((evaluated[0] / "metrics.json").read_text())["queries"]
    assert [Path(f["path"]).name for f in queries["failures"]] == ["broken.jpg"]
    assert queries["summary"]["photos"] == 9


def test_evaluate_prints_the_hit_at_k_table(evaluated: tuple[Path, int, str]) -> None:
    header, random_row, model_row = evaluated[2].splitlines()[:3]
    assert header.split() == ["hit@k", "k=1", "k=5", "k=10", "k=20", "k=50"]
    assert random_row.split()[0] == "random"
    assert model_row.split()[:2] == ["colour", "100.0%"]


def test_evaluate_without_references_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", "pretrained:mobilenet_v2", "--queries", "q"])
    assert exit_info.value.code == 2
    assert "--references" in capsys.readouterr().err


def test_evaluate_with_a_missing_export_fails_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_photos(tmp_path / "photos", 2, seed=0)
    photos = str(tmp_path / "photos")
    code = main(["--model", str(tmp_path / "nope"), "--references", photos, "--queries", photos])
    assert code == 1
    assert "not a model export" in capsys.readouterr().err


def test_parse_model_argument_takes_an_optional_name() -> None:
    assert parse_model_argument("ft=runs/a/model") == ("ft", "runs/a/model")
    assert parse_model_argument("runs/a/model") == ("model", "runs/a/model")
    assert parse_model_argument("pretrained:vgg16") == ("pretrained:vgg16", "pretrained:vgg16")


def test_parse_model_argument_rejects_an_empty_name() -> None:
    with pytest.raises(ValueError, match="NAME=WHAT"):
        parse_model_argument("=runs/a")


def manifest(backbone: str, input_size: int) -> ModelManifest:
    return ModelManifest(
        model_version="0123456789abcdef",
        backbone=backbone,
        input_size=input_size,
        embedding_dim=8,
        preprocessing=PreprocessingSpec(input_size=input_size),
        vote=VoteSettings(),
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        keras_version="3",
    )


def test_pretrained_input_size_follows_an_export_of_the_same_backbone() -> None:
    exports = [manifest("efficientnet_lite0", 192), manifest("mobilenet_v2", 160)]
    assert pretrained_input_size("mobilenet_v2", None, exports) == 160


def test_pretrained_input_size_prefers_the_requested_size() -> None:
    assert pretrained_input_size("mobilenet_v2", 128, [manifest("mobilenet_v2", 160)]) == 128


def test_pretrained_input_size_is_the_backbone_default_without_a_matching_export() -> None:
    assert pretrained_input_size("mobilenet_v2", None, [manifest("vgg16", 160)]) is None


def test_grid_queries_picks_queries_of_different_landmarks() -> None:
    from trainer.data.photos import Photo

    queries = [Photo(Path(f"/q/{lm}/{i}.jpg"), lm, lm) for lm in "abc" for i in range(5)]
    chosen = grid_queries(queries, 3, seed=0)
    assert sorted(queries[i].landmark_id for i in chosen) == ["a", "b", "c"]


@pytest.mark.slow
@pytest.mark.skipif(not DATA_DIR.is_dir(), reason=f"real landmark photos not found at {DATA_DIR}")
def test_pretrained_mobilenet_beats_random_on_real_landmarks(tmp_path: Path) -> None:
    """Three visually distinct landmarks, 3 references and 5 queries each, at 96 px."""
    for part, photos in (("references", slice(0, 3)), ("queries", slice(3, 8))):
        for landmark in ("tajmahal", "halong_bay", "brandenburg_gate"):
            (tmp_path / part / landmark).mkdir(parents=True)
            for path in sorted((DATA_DIR / landmark).iterdir())[photos]:
                (tmp_path / part / landmark / path.name).symlink_to(path)
    flags = ["--model", "pretrained:mobilenet_v2", "--input-size", "96", "--grid-queries", "2"]
    folders = ["--references", str(tmp_path / "references"), "--queries", str(tmp_path / "queries")]
    code = main([*flags, *folders, "--out", str(tmp_path / "out")])
    assert code == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["models"]["pretrained:mobilenet_v2"]["hit_at_k"]["1"] > 0.6
    assert metrics["random"]["hit_at_k"]["1"] == pytest.approx(1 / 3)
