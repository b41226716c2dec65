"""A throw-away TLS certificate for 127.0.0.1, and a server that speaks TLS with it.

For the tests and benches that fetch over ``https://`` from a server on this machine; the client
trusts the certificate through ``SSL_CERT_FILE`` (OpenSSL's default trust store). Needs the
``openssl`` command.
"""

from __future__ import annotations

import socketserver
import ssl
import subprocess
from pathlib import Path


def throwaway_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed P-256 certificate for 127.0.0.1, valid a day, and its key, in ``folder``."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt"),
            *("ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def serve_tls(server: socketserver.TCPServer, cert: Path, key: Path) -> None:
    """Make ``server`` (not yet serving) accept TLS connections only, with ``cert`` and ``key``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
