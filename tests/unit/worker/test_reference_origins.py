"""SSRF through references: origins with ports, non-public addresses, credentials never shown.

Each of the attacks here worked before the origin policy (issue 11): an allow-list entry without a
port allowed every port of its host, a host name resolving to loopback or the metadata address
was fetched, the user-info of a reference URL appeared in the error message (the dead letter's
message and the log line), and a non-image reply's first bytes were quoted as hex.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from configuration.redaction import redact_text, redact_uri
from schemas.errors import InputError, ReasonCode
from schemas.preprocessing import PreprocessingSpec, decode_photo
from worker.adapters.photo_fetcher import FetcherSettings, ReferenceFetcher
from worker.adapters.photo_fetcher.origins import (
    AllowedOrigin,
    OriginPolicy,
    RefusedAddress,
    parse_origin,
)

PHOTO = b"\xff\xd8 not really a jpeg"


class _Server:
    """A local HTTP server that counts the requests it receives."""

    def __init__(self) -> None:
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(PHOTO)))
                self.end_headers()
                self.wfile.write(PHOTO)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def two_servers() -> Iterator[tuple[_Server, _Server]]:
    first, second = _Server(), _Server()
    yield first, second
    first.close()
    second.close()


def _fetcher(*origins: str, networks: tuple[str, ...] = ()) -> ReferenceFetcher:
    return ReferenceFetcher(
        FetcherSettings(
            allowed_origins=frozenset(origins),
            private_networks=frozenset(networks),
            timeout_s=2.0,
        )
    )


def _refusal(fetcher: ReferenceFetcher, uri: str) -> InputError:
    with pytest.raises(InputError) as caught:
        fetcher.fetch(uri)
    return caught.value


# -- the allow-list's grammar -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("https://Images.Example.com.:443", AllowedOrigin("https", "images.example.com", 443, 443)),
        ("http://10.0.0.7:8000-8099", AllowedOrigin("http", "10.0.0.7", 8000, 8099)),
        ("http://[::1]:8080", AllowedOrigin("http", "::1", 8080, 8080)),
        ("http://[::ffff:127.0.0.1]:80", AllowedOrigin("http", "127.0.0.1", 80, 80)),
    ],
)
def test_an_origin_names_scheme_host_and_ports(entry: str, expected: AllowedOrigin) -> None:
    assert parse_origin(entry) == expected


@pytest.mark.parametrize(
    ("entry", "complaint"),
    [
        ("127.0.0.1", "must start with http"),
        ("http://127.0.0.1", "must name a port"),
        ("https://images.example.com", "must name a port"),
        ("http://[::1]", "must name a port"),
        ("ftp://files.example.com:21", "must start with http"),
        ("http://user:pw@images.example.com:80", "no path or user-info"),
        ("http://images.example.com:80/photos", "no path or user-info"),
        ("http://images.example.com:0", "not in 1..65535"),
        ("http://images.example.com:90-80", "reversed"),
    ],
)
def test_an_entry_without_a_port_or_with_more_than_an_origin_is_refused(
    entry: str, complaint: str
) -> None:
    with pytest.raises(ValueError, match=complaint):
        parse_origin(entry)


# -- ports ----------------------------------------------------------------------------------------


def test_an_allowed_host_does_not_open_its_other_ports(
    two_servers: tuple[_Server, _Server],
) -> None:
    """Before: ``127.0.0.1`` in the allow-list let a photo event reach any port of the host
    (other workers' /metrics, Milvus, Kafka)."""
    allowed, other = two_servers
    fetcher = _fetcher(f"http://127.0.0.1:{allowed.port}")
    assert fetcher.fetch(f"http://127.0.0.1:{allowed.port}/a.jpg") == PHOTO
    error = _refusal(fetcher, f"http://127.0.0.1:{other.port}/metrics")
    assert error.reason is ReasonCode.BAD_REFERENCE
    assert "is not allowed" in error.message
    assert other.requests == 0
    # Nor the same port over the other scheme.
    assert _refusal(fetcher, f"https://127.0.0.1:{allowed.port}/a.jpg").reason is (
        ReasonCode.BAD_REFERENCE
    )


def test_a_port_range_allows_exactly_its_ports(two_servers: tuple[_Server, _Server]) -> None:
    low, high = sorted(two_servers, key=lambda server: server.port)
    fetcher = _fetcher(f"http://127.0.0.1:{low.port}-{low.port}")
    assert fetcher.fetch(f"http://127.0.0.1:{low.port}/a.jpg") == PHOTO
    assert _refusal(fetcher, f"http://127.0.0.1:{high.port}/a.jpg").reason is (
        ReasonCode.BAD_REFERENCE
    )


def test_the_default_port_of_the_scheme_is_the_port_matched() -> None:
    policy = OriginPolicy.parse(["https://images.example.com:443"])
    assert policy.origin_for("https", "images.example.com", None) is not None
    assert policy.origin_for("https", "images.example.com", 8443) is None
    assert policy.origin_for("http", "images.example.com", None) is None


# -- addresses ------------------------------------------------------------------------------------


def test_a_host_name_that_resolves_to_loopback_is_refused_before_connecting(
    two_servers: tuple[_Server, _Server],
) -> None:
    """Before: any allowed name pointing at an internal address was fetched."""
    server, _ = two_servers
    fetcher = _fetcher(f"http://localhost:{server.port}")
    error = _refusal(fetcher, f"http://localhost:{server.port}/a.jpg")
    assert error.reason is ReasonCode.BAD_REFERENCE
    assert "non-public" in error.message and "--reference-private-networks" in error.message
    assert server.requests == 0
    # Opened explicitly by the operator, it is fetched.
    opened = _fetcher(f"http://localhost:{server.port}", networks=("127.0.0.0/8", "::1/128"))
    assert opened.fetch(f"http://localhost:{server.port}/a.jpg") == PHOTO
    assert server.requests == 1


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # the cloud metadata service
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fd00:ec2::254",
        "fe80::1",
        "::ffff:127.0.0.1",
    ],
)
def test_non_public_addresses_are_refused_for_a_named_host(address: str) -> None:
    policy = OriginPolicy.parse(["https://images.example.com:443"])
    origin = policy.origins[0]
    assert not policy.address_allowed(origin, ipaddress.ip_address(address))
    assert policy.address_allowed(origin, ipaddress.ip_address("93.184.215.14"))


def test_an_origin_that_names_an_address_allows_that_address_only() -> None:
    policy = OriginPolicy.parse(["http://10.0.0.7:80"])
    origin = policy.origins[0]
    assert policy.address_allowed(origin, ipaddress.ip_address("10.0.0.7"))
    assert not policy.address_allowed(origin, ipaddress.ip_address("10.0.0.8"))


def test_the_address_connected_to_is_the_one_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS rebinding: the name is resolved once, each address checked, and the connection made
    to the checked address, never by resolving the name again."""
    calls: list[str] = []

    def rebinding(host: str, port: int, *args: object, **kwargs: object) -> list[object]:
        calls.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    policy = OriginPolicy.parse(["http://images.example.com:80"])
    with pytest.raises(RefusedAddress):
        policy.connect(policy.origins[0], "images.example.com", 80, 1.0)
    assert calls == ["images.example.com"]


# -- nothing of the secret or of the remote's bytes is shown --------------------------------------


def test_credentials_in_a_reference_never_reach_the_message(
    two_servers: tuple[_Server, _Server],
) -> None:
    """Before: ``http://user:pass@host/...`` appeared in clear in the dead letter's message."""
    server, other = two_servers
    fetcher = _fetcher(f"http://127.0.0.1:{server.port}")
    for uri in (
        f"http://alice:s3cret-pw@127.0.0.1:{other.port}/a.jpg",  # origin not allowed
        f"http://alice:s3cret-pw@127.0.0.1:{server.port}/a.jpg",  # credentials in the URL
        "http://alice:s3cret-pw@127.0.0.1:99999/a.jpg",  # malformed port
        "gopher://alice:s3cret-pw@127.0.0.1/a.jpg",  # scheme refused
    ):
        try:
            fetcher.fetch(uri)
        except InputError as error:
            assert "s3cret-pw" not in error.message
            assert "***@" in error.message


def test_an_unsupported_reply_is_not_quoted() -> None:
    """Before: the first 8 bytes of whatever came back were in the message, as hex."""
    with pytest.raises(InputError) as caught:
        decode_photo(b"SSH-2.0-OpenSSH_9.6\r\n", PreprocessingSpec(input_size=32))
    assert caught.value.reason is ReasonCode.UNSUPPORTED_FORMAT
    assert b"SSH".hex() not in caught.value.message and "SSH" not in caught.value.message


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("http://user:pw@host/x.jpg", "http://***@host/x.jpg"),
        ("http://a@b@host:80/p", "http://***@host:80/p"),
        ("https://host/p?u=x@y", "https://host/p?u=x@y"),
        ("gallery.db", "gallery.db"),
    ],
)
def test_redaction_masks_user_info_only(text: str, shown: str) -> None:
    assert redact_uri(text) == shown
    assert redact_text(f"cannot reach {text} now") == f"cannot reach {shown} now"


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_log_lines_mask_credentials_whoever_writes_them(log_format: str) -> None:
    """Before: a dead letter's log line carried the reference URL with its password."""
    import io
    import logging

    import structlog

    from worker.observability.logs import configure_logging

    out = io.StringIO()
    configure_logging(log_format, "info", stream=out)
    try:
        structlog.get_logger("worker").warning(
            "dead letter", message="cannot fetch 'http://alice:s3cret-pw@photos.example:80/a.jpg'"
        )
        logging.getLogger("pymilvus").warning(
            "connect to http://root:Milvus-pw@milvus:19530 failed"
        )
    finally:
        configure_logging("json", "info")
    lines = out.getvalue()
    assert "s3cret-pw" not in lines and "Milvus-pw" not in lines
    assert lines.count("***@") == 2
