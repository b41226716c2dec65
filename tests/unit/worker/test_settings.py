"""landmark-worker settings: flags over env vars over defaults, and --help naming the vars."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.settings import WorkerSettings, build_parser, settings_from_args

REQUIRED = ["--model-dir", "/m", "--milvus-uri", "g.db"]


def parse(argv: list[str], environ: dict[str, str] | None = None) -> WorkerSettings:
    return settings_from_args(build_parser(environ or {}).parse_args(argv))


def test_defaults_apply_without_flags_or_env() -> None:
    settings = parse(REQUIRED)
    assert (settings.images_topic, settings.tags_topic, settings.dead_letter_topic) == (
        "images",
        "landmark-tags",
        "images.dlq",
    )
    assert settings.bootstrap_servers == "127.0.0.1:19092"


def test_env_var_sets_a_default() -> None:
    settings = parse(REQUIRED, {"LANDMARK_BATCH_MAX_RECORDS": "64"})
    assert settings.batch_max_records == 64


def test_flag_wins_over_env_var() -> None:
    settings = parse([*REQUIRED, "--batch-max-records", "8"], {"LANDMARK_BATCH_MAX_RECORDS": "64"})
    assert settings.batch_max_records == 8


def test_required_setting_can_come_from_env() -> None:
    settings = parse([], {"LANDMARK_MODEL_DIR": "/exports/m", "LANDMARK_MILVUS_URI": "x.db"})
    assert settings.model_dir == Path("/exports/m")


def test_missing_required_setting_is_an_error() -> None:
    with pytest.raises(SystemExit):
        parse(["--model-dir", "/m"])


def test_worker_id_defaults_to_hostname_and_pid() -> None:
    import os

    assert parse(REQUIRED).worker_id.endswith(f"-{os.getpid()}")


def test_reference_hosts_are_a_lower_case_set() -> None:
    settings = parse([*REQUIRED, "--reference-hosts", "Photos.Example.org, cdn.example.org:8080"])
    assert settings.reference_hosts == frozenset({"photos.example.org", "cdn.example.org:8080"})


def test_help_names_every_env_var() -> None:
    help_text = " ".join(build_parser({}).format_help().split())
    for var in (
        "LANDMARK_MODEL_DIR",
        "LANDMARK_KAFKA_BOOTSTRAP",
        "LANDMARK_BATCH_MAX_WAIT_MS",
        "LANDMARK_HTTP_PORT",
        "LANDMARK_REFERENCE_ROOT",
        "LANDMARK_LOG_FORMAT",
    ):
        assert f"[env: {var}]" in help_text


def test_zero_batch_size_is_rejected() -> None:
    with pytest.raises(SystemExit):
        parse([*REQUIRED, "--batch-max-records", "0"])


def test_bad_env_value_is_rejected_with_its_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse(REQUIRED, {"LANDMARK_BATCH_MAX_RECORDS": "many"})
    assert "LANDMARK_BATCH_MAX_RECORDS" in capsys.readouterr().err


def test_settings_are_frozen() -> None:
    settings = parse(REQUIRED)
    with pytest.raises(AttributeError):
        settings.group_id = "other"  # type: ignore[misc]


def test_milvus_token_is_read_from_the_environment_and_kept_out_of_repr(tmp_path):
    from worker.settings import build_parser, settings_from_args

    args = build_parser({"LANDMARK_MILVUS_TOKEN": "root:s3cret"}).parse_args(
        ["--model-dir", str(tmp_path), "--milvus-uri", "http://m:1"]
    )
    settings = settings_from_args(args)
    assert settings.milvus_token == "root:s3cret"
    assert "s3cret" not in repr(settings)
