"""No command shows a secret: every secret variable set to a marker, every ``--help`` checked.

The secret variables are found, not listed: every ``SecretStr`` field of every settings class of
the shared groups (Kafka password, Kafka key password, Milvus token, and any added later).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from configuration.base import CommandSettings, env_name, is_secret
from configuration.kafka import KafkaConnection
from configuration.milvus import MilvusConnection

REPO_ROOT = Path(__file__).resolve().parents[3]
COMMANDS = [
    "worker.cli",
    "client.publish",
    "client.follow",
    "trainer.cli.train",
    "trainer.cli.evaluate",
    "trainer.cli.gallery",
    "trainer.cli.split",
    "trainer.cli.weights",
    "trainer.cli.protocol",
    "devstack.demo",
    "bench.bench_worker",
    "bench.bench_gallery",
]


def _secret_variables(*classes: type[CommandSettings]) -> dict[str, str]:
    variables = {}
    for cls in classes:
        for name, field in cls.model_fields.items():
            if is_secret(field):
                variables[env_name(cls, name)] = f"MARKER-{name}-b7e2"
    return variables


SECRETS = _secret_variables(KafkaConnection, MilvusConnection)


def test_the_shared_groups_hold_the_secrets_the_issue_names() -> None:
    assert {
        "LANDMARK_KAFKA_PASSWORD",
        "LANDMARK_KAFKA_KEY_PASSWORD",
        "LANDMARK_MILVUS_TOKEN",
    } <= set(SECRETS)


@pytest.mark.parametrize("module", COMMANDS)
def test_help_never_shows_a_secret(module: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANDMARK_")}
    env.update(SECRETS, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "b7e2" not in result.stdout + result.stderr


def test_a_secret_is_masked_in_the_settings_repr_and_its_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pydantic import ValidationError

    for variable, value in SECRETS.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.setenv("LANDMARK_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    with pytest.raises(ValidationError) as caught:  # no user name: refused
        KafkaConnection()
    assert "b7e2" not in str(caught.value)
    monkeypatch.setenv("LANDMARK_KAFKA_USERNAME", "tagger")
    settings = KafkaConnection()
    assert "b7e2" not in repr(settings) and "b7e2" not in str(settings)
    assert (
        settings.kafka_client_options()["sasl_plain_password"] == SECRETS["LANDMARK_KAFKA_PASSWORD"]
    )
