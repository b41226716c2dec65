"""The Kafka connection group, shared by the worker, the client tools, the demo and the benches.

Where the brokers are and how to reach them: plaintext (the local broker), TLS with the system's
or a given CA, mutual TLS with a client certificate, SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)
over TLS, as managed services (Confluent Cloud, Amazon MSK, Aiven) and company clusters require.
Hostname verification is on unless turned off. The password and the key's password are secrets:
never in ``--help``, logs or errors, and each can come from a file (``..._FILE``).
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import SecretStr, model_validator

from configuration.base import CommandSettings, setting
from schemas.dead_letter import DEFAULT_DEAD_LETTER_TOPIC as DEAD_LETTER_TOPIC
from schemas.image_event import DEFAULT_IMAGE_TOPIC as IMAGES_TOPIC
from schemas.tag_event import DEFAULT_TAG_TOPIC as TAGS_TOPIC

__all__ = [
    "CONSUMER_SIZE_LIMITS",
    "DEAD_LETTER_TOPIC",
    "DEFAULT_BOOTSTRAP",
    "IMAGES_TOPIC",
    "TAGS_TOPIC",
    "KafkaConnection",
    "KafkaUnreachable",
    "check_connection",
    "connection_options",
    "describe_connection_failure",
]

#: The local single-node broker of ``deploy/local/kafka.sh``.
DEFAULT_BOOTSTRAP = "127.0.0.1:19092"

#: Size limits for every consumer of this project's topics. kafka-python refuses any network frame
#: above ``receive_message_max_bytes`` (1 MB by default) and closes the connection, while a fetch
#: of a few inline photos easily returns more; the broker (``deploy/local/kafka.sh``) accepts
#: record batches up to 40 MiB, and a fetch always returns at least one whole batch, so frames of
#: that size plus the response's framing must be readable.
CONSUMER_SIZE_LIMITS: dict[str, int] = {
    "fetch_max_bytes": 32 * 1024 * 1024,
    "max_partition_fetch_bytes": 8 * 1024 * 1024,
    "receive_message_max_bytes": 48 * 1024 * 1024,
}


SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class KafkaConnection(CommandSettings):
    """Where the brokers are and how to authenticate to them."""

    group_title: ClassVar[str] = "Kafka connection"

    bootstrap_servers: str = setting(
        DEFAULT_BOOTSTRAP,
        env="LANDMARK_KAFKA_BOOTSTRAP",
        help="Kafka bootstrap servers (host:port, comma-separated)",
    )
    kafka_security_protocol: SecurityProtocol = setting(
        "PLAINTEXT",
        help="PLAINTEXT, SSL (TLS; mutual TLS with --kafka-cert-file), SASL_PLAINTEXT or "
        "SASL_SSL (what managed services use)",
    )
    kafka_sasl_mechanism: SaslMechanism = setting(
        "SCRAM-SHA-512", help="SASL mechanism for SASL_*: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
    )
    kafka_username: str | None = setting(None, help="SASL user name (or API key)")
    kafka_password: SecretStr = setting(
        SecretStr(""), help="SASL password (or API secret); never shown or logged"
    )
    kafka_ca_file: Path | None = setting(
        None, help="PEM file of the CA certificates to trust (default: the system's)"
    )
    kafka_cert_file: Path | None = setting(
        None, help="PEM client certificate, for mutual TLS (with --kafka-key-file)"
    )
    kafka_key_file: Path | None = setting(None, help="PEM private key of the client certificate")
    kafka_key_password: SecretStr = setting(
        SecretStr(""), help="password of an encrypted --kafka-key-file; never shown or logged"
    )
    kafka_check_hostname: bool = setting(
        True, help="verify that the broker's certificate names the host connected to"
    )

    @model_validator(mode="after")
    def _consistent_security(self) -> KafkaConnection:
        protocol = self.kafka_security_protocol
        sasl, tls = protocol.startswith("SASL_"), protocol.endswith("SSL")
        if sasl and not (self.kafka_username and self.kafka_password.get_secret_value()):
            raise ValueError(
                f"--kafka-security-protocol {protocol} needs --kafka-username and "
                "--kafka-password (or LANDMARK_KAFKA_PASSWORD_FILE)"
            )
        tls_files = (self.kafka_ca_file, self.kafka_cert_file, self.kafka_key_file)
        if not tls and any(path is not None for path in tls_files):
            raise ValueError(
                f"certificate files are for SSL or SASL_SSL, not --kafka-security-protocol "
                f"{protocol}"
            )
        if (self.kafka_cert_file is None) != (self.kafka_key_file is None):
            raise ValueError("mutual TLS needs both --kafka-cert-file and --kafka-key-file")
        for path in tls_files:
            if path is not None and not path.is_file():
                raise ValueError(f"no such file: {path}")
        return self

    def kafka_tls_context(self) -> ssl.SSLContext:
        """The TLS context of SSL and SASL_SSL: the broker's certificate always verified (the
        given CA or the system's), its host name too unless turned off, the client certificate
        for mutual TLS.

        Raises:
            ValueError: a certificate or key file that cannot be used (the message names the
                file, never a password).
        """
        try:
            context = ssl.create_default_context(
                cafile=str(self.kafka_ca_file) if self.kafka_ca_file else None
            )
            context.check_hostname = self.kafka_check_hostname
            context.verify_mode = ssl.CERT_REQUIRED
            if self.kafka_cert_file is not None and self.kafka_key_file is not None:
                context.load_cert_chain(
                    str(self.kafka_cert_file),
                    str(self.kafka_key_file),
                    password=self.kafka_key_password.get_secret_value() or None,
                )
        except (ssl.SSLError, OSError) as error:
            files = ", ".join(
                str(path)
                for path in (self.kafka_ca_file, self.kafka_cert_file, self.kafka_key_file)
                if path is not None
            )
            reason = getattr(error, "reason", None) or type(error).__name__
            raise ValueError(
                f"cannot use the Kafka TLS files ({files or 'system CAs'}): {reason}"
            ) from None
        return context

    def kafka_client_options(self) -> dict[str, Any]:
        """Keyword arguments every kafka-python client of the project takes.

        They hold the password: pass them to a client, never log or show them.
        """
        protocol = self.kafka_security_protocol
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": protocol,
        }
        if protocol.startswith("SASL_"):
            options.update(
                sasl_mechanism=self.kafka_sasl_mechanism,
                sasl_plain_username=self.kafka_username,
                sasl_plain_password=self.kafka_password.get_secret_value(),
            )
        if protocol.endswith("SSL"):
            options["ssl_context"] = self.kafka_tls_context()
        return options


def connection_options(connection: str | Mapping[str, Any]) -> dict[str, Any]:
    """kafka-python options from a bootstrap string (a plaintext connection) or from
    :meth:`KafkaConnection.kafka_client_options`."""
    if isinstance(connection, str):
        return {"bootstrap_servers": connection}
    return dict(connection)


def describe_connection_failure(error: BaseException) -> str:
    """One line on why a Kafka client could not connect, TLS failures said plainly.

    kafka-python's clients report a refused SASL login only as brokers that never answer (they
    retry it); :func:`check_connection` names it before they start.
    """
    if isinstance(error, ssl.SSLCertVerificationError):
        return (
            f"the broker's TLS certificate was refused ({error.verify_message}): check "
            "--kafka-ca-file and that the bootstrap host is a name the certificate holds"
        )
    if isinstance(error, ssl.SSLError):
        return f"TLS handshake failed ({error.reason or type(error).__name__})"
    text = str(error) or type(error).__name__
    if type(error).__name__ in ("NoBrokersAvailable", "KafkaTimeoutError"):
        return (
            f"{text}: no broker answered (unreachable, the wrong --kafka-security-protocol, or "
            "SASL credentials refused)"
        )
    return text


class KafkaUnreachable(Exception):
    """No bootstrap server accepted a connection with these settings; the message says why."""


def cannot_connect(prog: str, bootstrap_servers: str, error: BaseException) -> str:
    """The one line a client command prints when it cannot connect to Kafka."""
    return (
        f"{prog}: cannot connect to Kafka at {bootstrap_servers}: "
        f"{describe_connection_failure(error)}"
    )


def check_connection(options: Mapping[str, Any], timeout_s: float = 10.0) -> None:
    """Connect to the bootstrap servers once, TLS and SASL included, within ``timeout_s``.

    kafka-python's clients retry a refused login or an unreachable broker until their own
    timeouts (a consumer can block for minutes) and say why only in their log; this check
    answers at once, with the reason.

    Raises:
        KafkaUnreachable: no server connected; the message names the last reason (SASL
            authentication refused, TLS certificate refused, connection refused, timeout).
    """
    from kafka.conn import BrokerConnection, get_ip_port_afi

    class _Connection(BrokerConnection):  # type: ignore[misc]
        first_error: BaseException | None = None  # the cause; later ones are its echoes

        def close(self, error: BaseException | None = None) -> None:
            if error is not None and self.first_error is None:
                self.first_error = error
            super().close(error)

    config = {k: v for k, v in options.items() if k != "bootstrap_servers"}
    servers = [s.strip() for s in str(options["bootstrap_servers"]).split(",") if s.strip()]
    reasons: list[str] = []
    deadline = time.monotonic() + timeout_s
    for server in servers:
        host, port, family = get_ip_port_afi(server)
        connection = _Connection(host, port, family, **config)
        try:
            if connection.connect_blocking(timeout=max(0.5, deadline - time.monotonic())):
                return
            error = connection.first_error
            reasons.append(
                f"{server}: "
                + (
                    _kafka_reason(error)
                    if error is not None
                    else "no connection (refused or timed out)"
                )
            )
        except (ssl.SSLError, OSError) as error:
            reasons.append(f"{server}: {describe_connection_failure(error)}")
        finally:
            connection.close()
    raise KafkaUnreachable("; ".join(reasons) or "no bootstrap server given")


def _kafka_reason(error: BaseException) -> str:
    if "Authentication" in type(error).__name__:  # SaslAuthenticationFailedError and kin
        return f"SASL authentication refused ({error}); check the user name, password and mechanism"
    return describe_connection_failure(error)
