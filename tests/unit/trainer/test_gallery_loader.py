"""The gallery loader's parts that need no Milvus: reference planning, versions, progress, CLI.

Loading into a real Milvus Lite is covered in tests/integration/test_milvus_gallery.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from pydantic import SecretStr

from configuration import load_settings
from schemas.gallery import LANDMARK_NAME_MAX_LENGTH, reference_id_for
from trainer.cli.gallery import DESCRIPTION, GalleryLoaderSettings, redact_uri
from trainer.cli.gallery import main as cli_main
from trainer.data.photos import Photo
from trainer.gallery.collection import GalleryLoadError, reference_row
from trainer.gallery.insertion import embed_images
from trainer.gallery.loader import GalleryLoadSettings
from trainer.gallery.progress import LoadProgress, ProgressLog
from trainer.gallery.references import Reference, gallery_version_of, plan_references


@pytest.fixture(autouse=True)
def no_landmark_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command reads the process environment: start each test without LANDMARK_* set."""
    for name in list(os.environ):
        if name.startswith("LANDMARK_"):
            monkeypatch.delenv(name)


def parse(*argv: str) -> GalleryLoaderSettings:
    return load_settings(
        GalleryLoaderSettings,
        ["--model-dir", "m", *argv],
        prog="landmark-load-gallery",
        description=DESCRIPTION,
    )


def photo_file(tmp_path: Path, name: str, data: bytes, landmark: str = "tajmahal") -> Photo:
    path = tmp_path / landmark / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return Photo(path, landmark, landmark.replace("_", " ").title())


def test_reference_id_is_derived_from_landmark_and_photo_bytes(tmp_path: Path) -> None:
    photo = photo_file(tmp_path, "a.jpg", b"photo-a")

    plan = plan_references([photo])

    assert [r.reference_id for r in plan.references] == [reference_id_for("tajmahal", b"photo-a")]


def test_same_photo_twice_under_one_landmark_is_one_reference(tmp_path: Path) -> None:
    first = photo_file(tmp_path, "a.jpg", b"same bytes")
    copy = photo_file(tmp_path, "a-copy.jpg", b"same bytes")

    plan = plan_references([first, copy])

    assert [r.photo for r in plan.references] == [first]
    assert [r.photo for r in plan.duplicates] == [copy]


def test_same_photo_under_two_landmarks_is_two_references(tmp_path: Path) -> None:
    photos = [
        photo_file(tmp_path, "a.jpg", b"same bytes", "iron_pillar"),
        photo_file(tmp_path, "a.jpg", b"same bytes", "qutub_minar"),
    ]

    assert len(plan_references(photos).references) == 2


def test_unreadable_photo_is_reported_not_fatal(tmp_path: Path) -> None:
    good = photo_file(tmp_path, "a.jpg", b"photo-a")
    gone = Photo(tmp_path / "tajmahal" / "gone.jpg", "tajmahal", "Tajmahal")

    plan = plan_references([good, gone])

    assert [r.photo for r in plan.references] == [good]
    assert [(bad.path, bad.reason) for bad in plan.bad_photos] == [
        (gone.path, "reference_unreachable")
    ]


def test_landmark_id_longer_than_the_field_is_a_bad_reference(tmp_path: Path) -> None:
    photo = photo_file(tmp_path, "a.jpg", b"x", landmark="l" * 129)

    plan = plan_references([photo])

    assert plan.references == []
    assert plan.bad_photos[0].reason == "bad_reference"


def test_gallery_version_does_not_depend_on_photo_order(tmp_path: Path) -> None:
    photos = [photo_file(tmp_path, f"{i}.jpg", bytes([i])) for i in range(5)]

    forward = gallery_version_of(plan_references(photos).references)
    backward = gallery_version_of(plan_references(photos[::-1]).references)

    assert forward == backward
    assert forward.startswith("g") and len(forward) == 13


def test_gallery_version_changes_when_a_photo_changes(tmp_path: Path) -> None:
    before = gallery_version_of(plan_references([photo_file(tmp_path, "a.jpg", b"1")]).references)
    after = gallery_version_of(plan_references([photo_file(tmp_path, "a.jpg", b"2")]).references)

    assert before != after


def test_progress_reports_share_rate_and_eta() -> None:
    progress = LoadProgress(done=100, total=400, inserted=64, elapsed_s=10.0)

    assert progress.rate == pytest.approx(10.0)
    assert progress.eta_s == pytest.approx(30.0)
    assert progress.describe() == "100/400 references (25.0%), 64 inserted, 10.0/s, ETA 30 s"


def test_progress_before_the_first_reference_has_no_eta() -> None:
    assert LoadProgress(done=0, total=10, inserted=0, elapsed_s=0.0).describe().endswith("ETA ?")


def test_progress_log_writes_at_most_one_line_per_interval_and_the_last() -> None:
    now = [0.0]
    log = ProgressLog(every_s=5.0, clock=lambda: now[0])

    for second in range(12):
        now[0] = float(second)
        log(LoadProgress(done=second, total=11, inserted=0, elapsed_s=float(second)))

    assert log.lines == 4  # at 0 s, 5 s, 10 s, and when done (11 s)


def test_row_cuts_a_long_name_on_a_character_boundary(tmp_path: Path) -> None:
    name = "é" * LANDMARK_NAME_MAX_LENGTH  # two bytes a character
    photo = Photo(tmp_path / "a.jpg", "x", name)
    row = reference_row(Reference("r1", photo), np.zeros(3, np.float32))

    assert len(row["landmark_name"].encode("utf-8")) <= LANDMARK_NAME_MAX_LENGTH
    assert row["landmark_name"] == "é" * (LANDMARK_NAME_MAX_LENGTH // 2)


def test_settings_hide_the_token_from_repr() -> None:
    settings = GalleryLoadSettings(token=SecretStr("root:Secret"))

    assert "Secret" not in repr(settings) and "Secret" not in str(settings)


def test_settings_reject_an_empty_batch() -> None:
    with pytest.raises(ValueError, match="batch sizes"):
        GalleryLoadSettings(insert_batch_size=0)


def test_model_output_of_the_wrong_dimension_is_refused() -> None:
    import keras

    model = keras.Sequential(
        [keras.Input((4, 4, 3)), keras.layers.Flatten(), keras.layers.Dense(3)]
    )

    with pytest.raises(GalleryLoadError, match=r"expected \(2, 8\)"):
        embed_images(model, np.zeros((2, 4, 4, 3), np.uint8), embedding_dim=8)


def test_model_output_that_is_not_unit_is_refused() -> None:
    import keras

    model = keras.Sequential(
        [keras.Input((4, 4, 3)), keras.layers.Flatten(), keras.layers.Dense(8, use_bias=False)]
    )
    model.layers[-1].set_weights([np.full((48, 8), 0.5, np.float32)])

    with pytest.raises(GalleryLoadError, match="not unit vectors"):
        embed_images(model, np.ones((2, 4, 4, 3), np.uint8), embedding_dim=8)


def test_unit_model_output_is_stored_normalised_to_the_last_bit() -> None:
    import keras

    model = keras.Sequential(
        [
            keras.Input((4, 4, 3)),
            keras.layers.Flatten(),
            keras.layers.Dense(8),
            keras.layers.UnitNormalization(),
            keras.layers.Rescaling(1.004),  # within the tolerance, as float32 rounding can be
        ]
    )

    rows = embed_images(model, np.arange(96, dtype=np.uint8).reshape(2, 4, 4, 3), 8)

    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-6)


def test_the_gallery_metric_is_ip_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse().metric == "IP"
    assert parse("--metric", "COSINE").metric == "COSINE"
    monkeypatch.setenv("LANDMARK_GALLERY_METRIC", "L2")
    assert parse().metric == "L2"
    assert GalleryLoadSettings().metric == "IP"


def test_environment_variables_set_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANDMARK_GALLERY_INDEX", "HNSW")
    monkeypatch.setenv("LANDMARK_GALLERY_KEEP_PREVIOUS", "false")
    monkeypatch.setenv("LANDMARK_MILVUS_URI", "http://milvus:19530")

    settings = parse()

    assert (settings.index_type, settings.keep_previous, settings.milvus_uri) == (
        "HNSW",
        False,
        "http://milvus:19530",
    )


def test_defaults_are_a_local_milvus_lite_file_and_the_landmarks_alias() -> None:
    settings = parse()

    assert (settings.milvus_uri, settings.gallery_alias, settings.keep_previous) == (
        "milvus.db",
        "landmarks",
        True,
    )
    assert settings.milvus_token.get_secret_value() == ""


def test_drop_previous_flag_turns_keeping_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANDMARK_GALLERY_KEEP_PREVIOUS", "true")

    assert parse("--drop-previous").keep_previous is False
    assert parse("--no-keep-previous").keep_previous is False


def test_old_alias_flag_still_names_the_gallery_alias() -> None:
    assert parse("--alias", "staging").gallery_alias == "staging"
    assert parse("--gallery-alias", "blue").gallery_alias == "blue"


def test_command_without_a_model_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main([])

    assert exit_info.value.code == 2
    assert "--model-dir / LANDMARK_MODEL_DIR" in capsys.readouterr().err


def test_command_with_a_folder_that_is_not_an_export_is_a_usage_error(tmp_path: Path) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    data = tmp_path / "data"
    photo_file(data, "a.jpg", b"x")

    assert cli_main(["--model-dir", str(tmp_path / "nothing"), "--data", str(data)]) == 2


def test_credentials_in_the_uri_are_redacted_for_logs() -> None:
    assert redact_uri("https://root:Secret@milvus:19530/db") == "https://***@milvus:19530/db"
    assert redact_uri("milvus.db") == "milvus.db"
