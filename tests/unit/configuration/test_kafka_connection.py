"""The Kafka connection group: security settings, their consistency, the client options."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from configuration.kafka import KafkaConnection, describe_connection_failure

CERTS_SCRIPT = Path(__file__).resolve().parents[3] / "deploy" / "local" / "kafka-certs.sh"


@pytest.fixture(autouse=True)
def no_landmark_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in [n for n in os.environ if n.startswith("LANDMARK_")]:
        monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl to make the test certificates")
    folder = tmp_path_factory.mktemp("certs")
    subprocess.run([str(CERTS_SCRIPT), str(folder)], check=True, capture_output=True, timeout=60)
    return folder


def test_plaintext_by_default_with_no_tls_or_sasl_options() -> None:
    options = KafkaConnection().kafka_client_options()
    assert options == {"bootstrap_servers": "127.0.0.1:19092", "security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "needs --kafka-username"),
        (
            {"kafka_security_protocol": "SASL_SSL", "kafka_username": "u"},
            "needs --kafka-username and --kafka-password",
        ),
        ({"kafka_ca_file": Path("/etc/hostname")}, "not --kafka-security-protocol PLAINTEXT"),
        (
            {"kafka_security_protocol": "SSL", "kafka_cert_file": Path("/etc/hostname")},
            "needs both",
        ),
        ({"kafka_security_protocol": "SSL", "kafka_ca_file": Path("/no/ca.pem")}, "no such file"),
    ],
)
def test_inconsistent_security_settings_are_refused(
    settings: dict[str, object], complaint: str
) -> None:
    with pytest.raises(ValidationError, match=complaint):
        KafkaConnection(**settings)


def test_sasl_ssl_options_carry_the_mechanism_user_password_and_a_verifying_context(
    certs: Path,
) -> None:
    settings = KafkaConnection(
        bootstrap_servers="broker.example:9093",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="PLAIN",
        kafka_username="key",
        kafka_password=SecretStr("secret"),
        kafka_ca_file=certs / "ca.pem",
    )
    options = settings.kafka_client_options()
    assert options["sasl_mechanism"] == "PLAIN"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("key", "secret")
    context = options["ssl_context"]
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname


def test_hostname_verification_can_be_turned_off_but_not_certificate_verification(
    certs: Path,
) -> None:
    context = KafkaConnection(
        kafka_security_protocol="SSL", kafka_ca_file=certs / "ca.pem", kafka_check_hostname=False
    ).kafka_tls_context()
    assert not context.check_hostname and context.verify_mode is ssl.CERT_REQUIRED


def test_mutual_tls_loads_the_client_certificate_and_a_bad_key_is_a_clear_error(
    certs: Path,
) -> None:
    KafkaConnection(
        kafka_security_protocol="SSL",
        kafka_ca_file=certs / "ca.pem",
        kafka_cert_file=certs / "client.pem",
        kafka_key_file=certs / "client.key",
    ).kafka_tls_context()
    mismatched = KafkaConnection(
        kafka_security_protocol="SSL",
        kafka_cert_file=certs / "client.pem",
        kafka_key_file=certs / "ca.key",  # not the certificate's key
        kafka_key_password=SecretStr("MARKER-9a0c"),
    )
    with pytest.raises(ValueError, match="cannot use the Kafka TLS files") as caught:
        mismatched.kafka_tls_context()
    assert "9a0c" not in str(caught.value)


def test_tls_failures_are_described_plainly() -> None:
    refused = ssl.SSLCertVerificationError(1, "certificate verify failed")
    refused.verify_message = "unable to get local issuer certificate"
    assert "certificate was refused (unable to get local issuer" in describe_connection_failure(
        refused
    )
