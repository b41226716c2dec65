"""Every Kafka client of the project against a real secured broker: SASL_SSL, mutual TLS, and the
failures a user meets first (wrong password, untrusted certificate, wrong host name).

The broker is a private one (``deploy/local/kafka.sh`` with ``KAFKA_TLS_DIR`` and
``KAFKA_SASL_USERS``, its own data folder), with certificates made for the run by
``deploy/local/kafka-certs.sh``. Its PLAINTEXT listener creates topics and reads outputs; the
clients under test use only the secured listeners.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.follow import main as follow_main
from client.publish import main as publish_main
from tests.integration.private_broker import private_broker
from tests.integration.worker_stack import (
    REPO_ROOT,
    create_topics,
    free_port,
    publish,
    read_outputs,
    shared_stack,
    worker_on_topics,
)

CERTS_SCRIPT = REPO_ROOT / "deploy" / "local" / "kafka-certs.sh"
USER, PASSWORD = "tagger", "correct-horse-battery"


@dataclasses.dataclass(frozen=True)
class SecuredBroker:
    plaintext: str
    ssl: str
    sasl_ssl: str
    wrong_name: str
    certs: Path

    def sasl_args(self, ca: str = "ca.pem") -> list[str]:
        return [
            *("--bootstrap-servers", self.sasl_ssl),
            *("--kafka-security-protocol", "SASL_SSL"),
            *("--kafka-username", USER),
            *("--kafka-ca-file", str(self.certs / ca)),
        ]

    def mtls_args(self) -> list[str]:
        return [
            *("--bootstrap-servers", self.ssl),
            *("--kafka-security-protocol", "SSL"),
            *("--kafka-ca-file", str(self.certs / "ca.pem")),
            *("--kafka-cert-file", str(self.certs / "client.pem")),
            *("--kafka-key-file", str(self.certs / "client.key")),
        ]


@pytest.fixture(scope="module")
def secured_broker(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SecuredBroker]:
    """A private broker with SSL (client certificate required), SASL_SSL and wrong-name
    listeners (``kafka_bootstrap``: the jars are there)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl to make the test certificates")
    root = tmp_path_factory.mktemp("secured-kafka")
    certs = root / "certs"
    made = subprocess.run(
        [str(CERTS_SCRIPT), str(certs)], capture_output=True, text=True, timeout=60
    )
    assert made.returncode == 0, made.stdout + made.stderr
    ports = {name: free_port() for name in ("ssl", "sasl_ssl", "wrong_name")}
    with private_broker(
        root / "kafka",
        KAFKA_SSL_PORT=str(ports["ssl"]),
        KAFKA_SASL_SSL_PORT=str(ports["sasl_ssl"]),
        KAFKA_WRONG_NAME_PORT=str(ports["wrong_name"]),
        KAFKA_TLS_DIR=str(certs),
        KAFKA_SASL_USERS=f"{USER}:{PASSWORD},other:other-password",
    ) as broker:
        yield SecuredBroker(
            plaintext=broker.bootstrap,
            ssl=f"127.0.0.1:{ports['ssl']}",
            sasl_ssl=f"127.0.0.1:{ports['sasl_ssl']}",
            wrong_name=f"127.0.0.1:{ports['wrong_name']}",
            certs=certs,
        )


@pytest.fixture()
def password_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The SASL password as Kubernetes and Docker mount secrets: a file named by ``*_FILE``."""
    path = tmp_path / "kafka-password"
    path.write_text(PASSWORD + "\n")
    monkeypatch.delenv("LANDMARK_KAFKA_PASSWORD", raising=False)
    monkeypatch.setenv("LANDMARK_KAFKA_PASSWORD_FILE", str(path))
    return path


def _photos(landmarks_dir: Path, count: int, offset: int = 0) -> list[Path]:
    return sorted(landmarks_dir.glob("*/*.jpg"))[offset::53][:count]


def test_publish_over_sasl_ssl_and_follow_over_mutual_tls(
    secured_broker: SecuredBroker,
    password_file: Path,
    landmarks_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topics = create_topics(secured_broker.plaintext, "secured-clients", partitions=1)
    photos = _photos(landmarks_dir, 3)
    published = publish(
        secured_broker.sasl_ssl,
        topics[0],
        photos,
        tmp_path / "ids.jsonl",
        *secured_broker.sasl_args()[2:],
    )
    assert len(published) == 3
    # The client certificate is the only credential of the SSL listener; the image events are
    # not tag events, so each shows as an invalid event, read all the same.
    status = follow_main(
        [
            *secured_broker.mtls_args(),
            "--topic",
            topics[0],
            "--from-beginning",
            "--json",
            "--max-events",
            "3",
            "--timeout",
            "60",
        ]
    )
    assert status == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    assert len(lines) == 3


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong_password", "SASL authentication refused"),
        ("untrusted_ca", "certificate was refused"),
        ("wrong_host_name", "certificate was refused"),
        ("no_client_certificate", "TLS handshake failed"),
    ],
)
def test_a_client_that_cannot_connect_says_why_in_one_line(
    secured_broker: SecuredBroker,
    case: str,
    expected: str,
    landmarks_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("LANDMARK_KAFKA_PASSWORD", PASSWORD)
    args = secured_broker.sasl_args()
    if case == "wrong_password":
        monkeypatch.setenv("LANDMARK_KAFKA_PASSWORD", "not-the-password")
    elif case == "untrusted_ca":
        args = secured_broker.sasl_args(ca="untrusted-ca.pem")
    elif case == "wrong_host_name":
        args = [
            *("--bootstrap-servers", secured_broker.wrong_name),
            *("--kafka-security-protocol", "SSL"),
            *("--kafka-ca-file", str(secured_broker.certs / "ca.pem")),
        ]
    else:
        args = secured_broker.mtls_args()[:6]  # no --kafka-cert-file / --kafka-key-file
    status = publish_main(
        [
            *args,
            "--topic",
            "never-created",
            "--timeout-s",
            "5",
            "--quiet",
            str(_photos(landmarks_dir, 1)[0]),
        ]
    )
    error = capsys.readouterr().err
    assert status == 1
    lines = [line for line in error.splitlines() if line.startswith("landmark-publish:")]
    assert len(lines) == 1 and expected in lines[0], error
    assert "not-the-password" not in error and PASSWORD not in error


def test_worker_tags_over_sasl_ssl_and_waits_out_a_wrong_password_without_losing_photos(
    secured_broker: SecuredBroker,
    landmarks_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A wrong password: one clear line, /readyz 503, retries with backoff instead of exiting.
    Fixed and restarted: every photo published meanwhile is tagged."""
    stack = shared_stack(landmarks_dir)
    topics = create_topics(secured_broker.plaintext, "secured-worker")
    photos = _photos(landmarks_dir, 12, offset=5)
    monkeypatch.setenv("LANDMARK_KAFKA_PASSWORD", "not-the-password")
    wrong = worker_on_topics(
        stack,
        secured_broker.sasl_ssl,
        topics,
        "worker-wrong-password",
        tmp_path / "wrong.log",
        extra_args=[*secured_broker.sasl_args()[2:], "--backoff-max-s", "2"],
    )
    try:
        deadline = time.monotonic() + 120
        while "cannot connect at start-up" not in wrong.log():
            assert wrong.process.poll() is None, wrong.log()
            assert time.monotonic() < deadline, wrong.log()
            time.sleep(0.5)
        published = publish(secured_broker.plaintext, topics[0], photos, tmp_path / "ids.jsonl")
        ids = {record["image_id"] for record in published}
        time.sleep(6)  # a few retries
        assert wrong.process.poll() is None, "the worker must retry, not exit"
        assert wrong.get("/readyz")[0] == 503
        log = wrong.log()
        retries = [line for line in log.splitlines() if "cannot connect at start-up" in line]
        assert len(retries) >= 2
        assert "SASL authentication refused" in retries[0]
        assert "not-the-password" not in log
    finally:
        wrong.terminate()

    path = tmp_path / "kafka-password"
    path.write_text(PASSWORD)
    monkeypatch.delenv("LANDMARK_KAFKA_PASSWORD")
    monkeypatch.setenv("LANDMARK_KAFKA_PASSWORD_FILE", str(path))
    # Every other secret set to a marker too (Milvus Lite takes no token; Kafka's key password
    # has no key to open here): none may reach a log line, at debug level.
    monkeypatch.setenv("LANDMARK_MILVUS_TOKEN", "root:MARKER-milvus-7d1e")
    monkeypatch.setenv("LANDMARK_KAFKA_KEY_PASSWORD", "MARKER-key-7d1e")
    fixed = worker_on_topics(
        stack,
        secured_broker.sasl_ssl,
        topics,
        "worker-fixed",
        tmp_path / "fixed.log",
        extra_args=[*secured_broker.sasl_args()[2:], "--log-level", "debug"],
    )
    try:
        values = read_outputs(
            secured_broker.plaintext,
            [topics[1], topics[2]],
            expected=len(ids),
            timeout_s=180,
        )
        tagged = {json.loads(value)["image_id"] for value in values[topics[1]]}
        assert tagged == ids, fixed.log()
        assert fixed.get("/readyz")[0] == 200
        log = fixed.log()
        assert PASSWORD not in log and "7d1e" not in log
    finally:
        with contextlib.suppress(Exception):
            fixed.terminate()


def test_worker_tags_over_mutual_tls(
    secured_broker: SecuredBroker, landmarks_dir: Path, tmp_path: Path
) -> None:
    """The client certificate as the worker's only credential (the SSL listener requires it)."""
    stack = shared_stack(landmarks_dir)
    topics = create_topics(secured_broker.plaintext, "secured-mtls-worker")
    published = publish(
        secured_broker.plaintext, topics[0], _photos(landmarks_dir, 4, 7), tmp_path / "ids.jsonl"
    )
    worker = worker_on_topics(
        stack,
        secured_broker.ssl,
        topics,
        "worker-mtls",
        tmp_path / "mtls.log",
        extra_args=secured_broker.mtls_args()[2:],
    )
    try:
        values = read_outputs(secured_broker.plaintext, [topics[1]], expected=4, timeout_s=180)
        tagged = {json.loads(value)["image_id"] for value in values[topics[1]]}
        assert tagged == {record["image_id"] for record in published}, worker.log()
    finally:
        worker.terminate()
