"""The trainer's commands are configured by the one mechanism of :mod:`configuration`.

Each command has one settings class; the split flags are one group with one set of variables,
shared by ``landmark-train`` and ``python -m trainer.cli.split``; the Milvus token is a secret.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from configuration import CommandSettings, build_parser, load_settings
from configuration.base import env_name, is_positional
from trainer.cli import evaluate, gallery, split, train, weights
from trainer.cli.settings import SplitSettings, manifest_parameters

REPO_ROOT = Path(__file__).resolve().parents[3]
MARKER = "tok-3f9c1e-never-shown"

#: (settings class, prog, description, the least argv the command accepts)
COMMANDS: list[tuple[type[CommandSettings], str, str, list[str]]] = [
    (train.TrainSettings, "landmark-train", train.DESCRIPTION, []),
    (
        evaluate.EvaluateSettings,
        "landmark-evaluate",
        evaluate.DESCRIPTION,
        ["--model", "m", "--references", "r", "--queries", "q"],
    ),
    (
        gallery.GalleryLoaderSettings,
        "landmark-load-gallery",
        gallery.DESCRIPTION,
        ["--model-dir", "m"],
    ),
    (split.SplitCommandSettings, "python -m trainer.cli.split", split.DESCRIPTION, ["--out", "o"]),
    (weights.WeightsSettings, "python -m trainer.cli.weights", weights.DESCRIPTION, ["fetch"]),
]


@pytest.fixture(autouse=True)
def no_landmark_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """The settings read the process environment: start each test without LANDMARK_* set."""
    for name in list(os.environ):
        if name.startswith("LANDMARK_"):
            monkeypatch.delenv(name)


def parse(cls: type[CommandSettings], *argv: str) -> CommandSettings:
    _, prog, description, least = next(command for command in COMMANDS if command[0] is cls)
    return load_settings(cls, [*least, *argv], prog=prog, description=description)


def train_settings(*argv: str) -> train.TrainSettings:
    settings = parse(train.TrainSettings, *argv)
    assert isinstance(settings, train.TrainSettings)
    return settings


@pytest.mark.parametrize("command", COMMANDS, ids=[command[1] for command in COMMANDS])
def test_help_names_the_variable_of_every_setting(
    command: tuple[type[CommandSettings], str, str, list[str]],
) -> None:
    cls, prog, description, _ = command
    help_text = " ".join(
        build_parser(cls, prog=prog, description=description).format_help().split()
    )
    for name, field in cls.model_fields.items():
        if not is_positional(field):
            assert f"[env: {env_name(cls, name)}" in help_text, name


def _load_gallery_command() -> list[str]:
    script = Path(sys.executable).parent / "landmark-load-gallery"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "trainer.cli.gallery"]


def test_load_gallery_help_never_shows_the_token() -> None:
    env = {**os.environ, "LANDMARK_MILVUS_TOKEN": MARKER, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [*_load_gallery_command(), "--help"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "LANDMARK_MILVUS_TOKEN" in result.stdout
    assert MARKER not in result.stdout + result.stderr


def test_the_token_stays_out_of_reprs_and_errors(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LANDMARK_MILVUS_TOKEN", MARKER)
    settings = parse(gallery.GalleryLoaderSettings)
    assert isinstance(settings, gallery.GalleryLoaderSettings)
    assert settings.milvus_token.get_secret_value() == MARKER
    assert MARKER not in repr(settings) and MARKER not in str(settings)
    with pytest.raises(SystemExit):
        parse(gallery.GalleryLoaderSettings, "--embed-batch-size", "0")
    assert MARKER not in capsys.readouterr().err


def test_the_token_can_come_from_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "token").write_text(MARKER + "\n")
    monkeypatch.setenv("LANDMARK_MILVUS_TOKEN_FILE", str(tmp_path / "token"))
    settings = parse(gallery.GalleryLoaderSettings)
    assert isinstance(settings, gallery.GalleryLoaderSettings)
    assert settings.milvus_token.get_secret_value() == MARKER


def test_train_needs_only_data_and_output_and_keeps_its_defaults(tmp_path: Path) -> None:
    settings = train_settings("--data", str(tmp_path / "d"), "--output", str(tmp_path / "o"))
    assert (settings.data, settings.output) == (tmp_path / "d", tmp_path / "o")
    assert (settings.hold_out_landmarks, settings.query, settings.val) == (0, 0.2, 0.1)
    assert (settings.references, settings.heldout_references, settings.cap) == (3, 3, None)
    assert (settings.backbone, settings.weights, settings.input_size) == (
        "mobilenet_v2",
        "imagenet",
        288,
    )
    assert (settings.loss, settings.distillation, settings.pooling) == (
        "subcenter_arcface",
        2.0,
        "average",
    )
    assert (settings.target_precision, settings.calibration_confidence) == (0.9, 0.9)
    assert (settings.trainable_from, settings.embedding_dim, settings.mining) == (
        "auto",
        None,
        "random",
    )
    assert (settings.margin, settings.p, settings.k, settings.lr) == (0.1, 8, 4, 1e-4)
    assert (settings.epochs, settings.patience, settings.augment_views) == (12, 3, 2)
    assert (settings.whitening, settings.whitening_dim, settings.whitening_shrinkage) == (
        True,
        None,
        1.0,
    )
    assert (settings.seed, settings.workers, settings.batch_size) == (0, 2, 32)
    assert settings.split is None and settings.no_resume is False


def test_train_flags_keep_their_names(tmp_path: Path) -> None:
    settings = train_settings(
        *("--hold-out-landmarks", "0", "--backbone", "efficientnet_lite0"),
        *("--input-size", "224", "--epochs", "1", "--cap", "10", "--p", "4", "--k", "2"),
        *("--trainable-from", "none", "--weights", "none", "--embedding-dim", "64"),
        "--no-resume",
    )
    assert (settings.hold_out_landmarks, settings.backbone, settings.input_size) == (
        0,
        "efficientnet_lite0",
        224,
    )
    assert (settings.epochs, settings.cap, settings.p, settings.k) == (1, 10, 4, 2)
    assert (settings.trainable_from, settings.weights, settings.embedding_dim) == (None, None, 64)
    assert settings.no_resume is True


def test_train_keeps_its_own_variable_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANDMARK_EPOCHS", "2")
    monkeypatch.setenv("LANDMARK_CACHE_BATCH", "8")
    monkeypatch.setenv("LANDMARK_NO_RESUME", "1")
    monkeypatch.setenv("LANDMARK_SEED", "7")
    settings = train_settings()
    assert (settings.epochs, settings.batch_size, settings.no_resume, settings.seed) == (
        2,
        8,
        True,
        7,
    )


def test_sizes_are_counts_or_fractions() -> None:
    assert train_settings("--hold-out-landmarks", "3").hold_out_landmarks == 3
    assert isinstance(train_settings("--hold-out-landmarks", "3").hold_out_landmarks, int)
    assert train_settings("--query", "0.3").query == 0.3
    assert isinstance(train_settings("--query", "3.0").query, float)
    assert train_settings("--heldout-references", "0.5").heldout_references == 0.5


def test_zero_means_none_for_the_cap_and_the_projection() -> None:
    settings = train_settings("--cap", "0", "--embedding-dim", "0")
    assert (settings.cap, settings.embedding_dim) == (None, None)


def test_trainable_from_auto_is_the_measured_stage_for_mobilenet_v2() -> None:
    assert train.trainable_from_of(train_settings()) == "block_15"
    assert train.trainable_from_of(train_settings("--trainable-from", "block_16")) == "block_16"


def test_split_flags_are_one_group_with_one_set_of_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LANDMARK_SPLIT_HOLD_OUT", "2")
    monkeypatch.setenv("LANDMARK_SPLIT_QUERY", "0.3")
    monkeypatch.setenv("LANDMARK_SPLIT_REFERENCES", "5")
    monkeypatch.setenv("LANDMARK_SPLIT_CAP", "20")
    for cls in (train.TrainSettings, split.SplitCommandSettings):
        assert issubclass(cls, SplitSettings)
        settings = parse(cls)
        assert isinstance(settings, SplitSettings)
        assert (settings.hold_out_landmarks, settings.query, settings.references) == (2, 0.3, 5)
        assert settings.cap == 20


def test_split_json_records_the_split_flags() -> None:
    parameters = manifest_parameters(train_settings("--csv", "train.csv", "--val", "0"))
    assert parameters == {
        "csv": "train.csv",
        "names_csv": None,
        "cap": None,
        "hold_out_landmarks": 0,
        "query": 0.2,
        "val": 0,
        "references": 3,
        "heldout_references": 3,
    }


def test_split_command_keeps_its_seed_and_output_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANDMARK_SPLIT_SEED", "4")
    monkeypatch.setenv("LANDMARK_SPLIT_DIR", "splits/s4")
    settings = load_settings(
        split.SplitCommandSettings, [], prog="python -m trainer.cli.split", description="d"
    )
    assert (settings.seed, settings.out) == (4, Path("splits/s4"))


def test_evaluate_takes_several_models_from_the_flag_or_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    flags = ["--references", "r", "--queries", "q"]
    settings = load_settings(
        evaluate.EvaluateSettings,
        ["--model", "a=x", "b=y", *flags],
        prog="landmark-evaluate",
        description="d",
    )
    assert settings.models == ("a=x", "b=y")
    monkeypatch.setenv("LANDMARK_EVAL_MODELS", "a=x 'b=my model'")
    settings = load_settings(evaluate.EvaluateSettings, flags, prog="p", description="d")
    assert settings.models == ("a=x", "b=my model")
    assert (settings.out, settings.vote_k, settings.vote_weighting) == (
        Path("runs/evaluate"),
        None,
        None,
    )


def test_evaluate_without_models_names_the_flag_and_the_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--references", "r", "--queries", "q"])
    assert exit_info.value.code == 2
    assert "--model / LANDMARK_EVAL_MODELS" in capsys.readouterr().err


def test_cache_dir_is_one_setting_of_every_command_that_caches(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LANDMARK_CACHE_DIR", str(tmp_path))
    for cls in (train.TrainSettings, evaluate.EvaluateSettings, weights.WeightsSettings):
        assert parse(cls).cache_dir == tmp_path


def test_weights_fetch_takes_backbone_names_or_all() -> None:
    every = parse(weights.WeightsSettings)
    assert isinstance(every, weights.WeightsSettings)
    assert every.names == tuple(sorted(weights.CHECKPOINTS))
    one = parse(weights.WeightsSettings, "mobilenet_v2")
    assert isinstance(one, weights.WeightsSettings)
    assert one.names == ("mobilenet_v2",)


def test_weights_without_a_known_command_is_a_usage_error() -> None:
    for argv in ([], ["pull"]):
        with pytest.raises(SystemExit) as exit_info:
            weights.main(argv)
        assert exit_info.value.code == 2
