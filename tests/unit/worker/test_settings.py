"""landmark-worker settings: flags over env vars over defaults, and --help naming the vars."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from configuration import build_parser, load_settings
from configuration.base import env_name, is_secret
from worker.cli import DESCRIPTION
from worker.settings import WorkerSettings

REQUIRED = ["--model-dir", "/m", "--milvus-uri", "g.db"]


@pytest.fixture(autouse=True)
def no_landmark_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """The settings read the process environment: start each test without LANDMARK_* set."""
    for name in list(os.environ):
        if name.startswith("LANDMARK_"):
            monkeypatch.delenv(name)


def parse(argv: list[str]) -> WorkerSettings:
    return load_settings(WorkerSettings, argv, prog="landmark-worker", description=DESCRIPTION)


def help_text() -> str:
    parser = build_parser(WorkerSettings, prog="landmark-worker", description=DESCRIPTION)
    return " ".join(parser.format_help().split())


def test_defaults_apply_without_flags_or_env() -> None:
    settings = parse(REQUIRED)
    assert (settings.images_topic, settings.tags_topic, settings.dead_letter_topic) == (
        "images",
        "landmark-tags",
        "images.dlq",
    )
    assert settings.bootstrap_servers == "127.0.0.1:19092"


def test_env_var_sets_a_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANDMARK_BATCH_MAX_RECORDS", "64")
    assert parse(REQUIRED).batch_max_records == 64


def test_flag_wins_over_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANDMARK_BATCH_MAX_RECORDS", "64")
    assert parse([*REQUIRED, "--batch-max-records", "8"]).batch_max_records == 8


def test_legacy_variable_names_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANDMARK_KAFKA_BOOTSTRAP", "broker:9092")
    monkeypatch.setenv("LANDMARK_DLQ_TOPIC", "bad")
    settings = parse(REQUIRED)
    assert (settings.bootstrap_servers, settings.dead_letter_topic) == ("broker:9092", "bad")


def test_required_setting_can_come_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANDMARK_MODEL_DIR", "/exports/m")
    monkeypatch.setenv("LANDMARK_MILVUS_URI", "x.db")
    assert parse([]).model_dir == Path("/exports/m")


def test_missing_required_setting_names_flag_and_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        parse(["--model-dir", "/m"])
    assert "--milvus-uri / LANDMARK_MILVUS_URI: required" in capsys.readouterr().err


def test_worker_id_defaults_to_hostname_and_pid() -> None:
    assert parse(REQUIRED).worker_id.endswith(f"-{os.getpid()}")


def test_decode_threads_default_is_the_same_with_and_without_the_command_line() -> None:
    expected = max(1, min(8, os.cpu_count() or 1))
    from_class = WorkerSettings(model_dir=Path("/m"), milvus_uri="g.db").decode_threads
    assert parse(REQUIRED).decode_threads == from_class == expected


def test_reference_origins_are_canonical_and_need_a_port(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = parse(
        [*REQUIRED, "--reference-origins", "HTTPS://Photos.Example.org.:443, http://[::1]:80-90"]
    )
    assert settings.reference_origins == frozenset(
        {"https://photos.example.org:443", "http://[::1]:80-90"}
    )
    monkeypatch.setenv("LANDMARK_REFERENCE_PRIVATE_NETWORKS", "10.1.2.3/8")
    assert parse(REQUIRED).reference_private_networks == frozenset({"10.0.0.0/8"})
    for entry in ("127.0.0.1", "http://127.0.0.1", "cdn.example.org:8080", "ftp://h:21"):
        with pytest.raises(SystemExit):
            parse([*REQUIRED, "--reference-origins", entry])


def test_help_names_the_variable_of_every_setting() -> None:
    text = help_text()
    for name, field in WorkerSettings.model_fields.items():
        variable = env_name(WorkerSettings, name)
        shown = (
            f"[env: {variable} or {variable}_FILE]" if is_secret(field) else f"[env: {variable}]"
        )
        assert shown in text, name


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--batch-max-records", "0"),
        ("--reference-timeout-s", "0"),
        ("--dead-letter-max-inline-bytes", str(512 * 1024 + 1)),
        ("--http-port", "70000"),
        ("--auto-offset-reset", "middle"),
    ],
)
def test_out_of_range_values_are_rejected(flag: str, value: str) -> None:
    with pytest.raises(SystemExit):
        parse([*REQUIRED, flag, value])


def test_help_says_the_reference_timeout_bounds_the_whole_fetch() -> None:
    assert "whole fetch" in " ".join(help_text().split())


@pytest.mark.parametrize(
    "flags",
    [
        ["--reference-timeout-s", "20", "--max-poll-interval-ms", "60000"],
        ["--publish-timeout-s", "20", "--max-poll-interval-ms", "60000"],
    ],
    ids=["reference-timeout", "publish-timeout"],
)
def test_timeouts_that_do_not_fit_in_the_poll_interval_are_refused(
    flags: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse([*REQUIRED, *flags])
    assert "--max-poll-interval-ms" in capsys.readouterr().err


def test_timeouts_that_fit_in_the_poll_interval_are_accepted() -> None:
    flags = ["--reference-timeout-s", "15", "--publish-timeout-s", "10"]
    settings = parse([*REQUIRED, *flags, "--max-poll-interval-ms", "60000"])
    assert (settings.reference_timeout_s, settings.publish_timeout_s) == (15.0, 10.0)


def test_connections_to_photo_stores_are_kept_unless_turned_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert parse(REQUIRED).reference_keep_alive is True
    assert parse([*REQUIRED, "--no-reference-keep-alive"]).reference_keep_alive is False
    monkeypatch.setenv("LANDMARK_REFERENCE_KEEP_ALIVE", "false")
    assert parse(REQUIRED).reference_keep_alive is False


def test_bad_env_value_is_rejected_with_its_name_but_not_its_value(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LANDMARK_BATCH_MAX_RECORDS", "many-XYZZY")
    with pytest.raises(SystemExit):
        parse(REQUIRED)
    err = capsys.readouterr().err
    assert "LANDMARK_BATCH_MAX_RECORDS" in err
    assert "XYZZY" not in err


def test_settings_are_frozen() -> None:
    settings = parse(REQUIRED)
    with pytest.raises(ValueError, match="frozen"):
        settings.group_id = "other"  # type: ignore[misc]


def test_milvus_token_is_a_secret_kept_out_of_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANDMARK_MILVUS_TOKEN", "root:s3cret")
    settings = parse(REQUIRED)
    assert isinstance(settings.milvus_token, SecretStr)
    assert settings.milvus_token.get_secret_value() == "root:s3cret"
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings)


def test_milvus_token_can_come_from_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("root:from-file\n")
    monkeypatch.setenv("LANDMARK_MILVUS_TOKEN_FILE", str(secret))
    assert parse(REQUIRED).milvus_token.get_secret_value() == "root:from-file"


def test_help_shows_no_secret_value_from_the_environment() -> None:
    """``landmark-worker --help`` with every secret variable set to a marker shows no marker."""
    secrets = [name for name, field in WorkerSettings.model_fields.items() if is_secret(field)]
    assert secrets, "the worker has secrets (the Milvus token at least)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANDMARK_")}
    for name in secrets:
        env[env_name(WorkerSettings, name)] = f"MARKER-{name}-4f1c"
    result = subprocess.run(
        [sys.executable, "-m", "worker.cli", "--help"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert "--milvus-token" in result.stdout
    assert "4f1c" not in result.stdout + result.stderr


def test_delivery_is_at_least_once_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse(REQUIRED).delivery == "at-least-once"
    monkeypatch.setenv("LANDMARK_DELIVERY", "exactly-once")
    assert parse(REQUIRED).delivery == "exactly-once"
    with pytest.raises(SystemExit):
        parse([*REQUIRED, "--delivery", "exactly-twice"])


def test_a_transaction_timeout_shorter_than_a_publish_is_refused_in_exactly_once_mode(
    capsys: pytest.CaptureFixture[str],
) -> None:
    flags = ["--publish-timeout-s", "10", "--transaction-timeout-ms", "5000"]
    assert parse([*REQUIRED, *flags]).transaction_timeout_ms == 5000  # unused at-least-once
    with pytest.raises(SystemExit):
        parse([*REQUIRED, *flags, "--delivery", "exactly-once"])
    assert "--transaction-timeout-ms" in capsys.readouterr().err


def test_the_allocator_is_tuned_unless_asked_for_glibc_s_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert parse(REQUIRED).allocator == "tuned"
    assert parse([*REQUIRED, "--allocator", "system"]).allocator == "system"
    monkeypatch.setenv("LANDMARK_ALLOCATOR", "system")
    assert parse(REQUIRED).allocator == "system"
    with pytest.raises(SystemExit):
        parse([*REQUIRED, "--allocator", "jemalloc"])
