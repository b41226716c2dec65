"""A photo store for the loop benchmarks: a folder served over HTTP/1.1 (or HTTPS), keep-alive.

Python's own ``http.server`` answers HTTP/1.0 by default (one connection a photo, whatever the
client does) and, asked for HTTP/1.1, writes the headers and the body in two sends under Nagle's
algorithm: a kept connection then waits on the client's delayed acknowledgement. Stores a worker
reads from (nginx, object stores) keep connections open and send without that delay; this server
does the same, in a process of its own so that its CPU is not the worker's.

    python bench/photo_server.py PORT FOLDER [--tls CERT KEY]

:class:`PhotoServer` starts it from a benchmark and stops it.
"""

from __future__ import annotations

import argparse
import functools
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from devstack.processes import http_ok, stop_all
from tests.tls import serve_tls, throwaway_certificate


class _KeepAliveHandler(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        pass


class PhotoServer:
    """This server on ``folder`` (HTTP/1.1, keep-alive; HTTPS with a throw-away certificate that
    the calling process then trusts), in a process of its own (its CPU is not the worker's): the
    references' origin at ``origin``."""

    def __init__(self, folder: Path, tls: bool = False) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        command = [sys.executable, str(Path(__file__)), str(port)]
        command.append(str(folder))
        if tls:
            command += ["--tls", *self._certificate(folder.with_name(folder.name + "-tls"))]
        self.origin = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while not http_ok(f"{self.origin}/", timeout_s=1.0):
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the photo server at {self.origin} did not answer in 10 s")
            time.sleep(0.05)

    @staticmethod
    def _certificate(folder: Path) -> tuple[str, str]:
        """A throw-away certificate for 127.0.0.1 and its key, trusted by this process from now
        on (OpenSSL's default trust store is ``SSL_CERT_FILE``)."""
        folder.mkdir(exist_ok=True)
        cert, key = throwaway_certificate(folder)
        os.environ["SSL_CERT_FILE"] = str(cert)
        return str(cert), str(key)

    def stop(self) -> None:
        stop_all([self._process], timeout_s=10.0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("port", type=int)
    parser.add_argument("folder")
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    args = parser.parse_args(argv)
    handler = functools.partial(_KeepAliveHandler, directory=args.folder)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler)
    server.daemon_threads = True
    if args.tls:
        serve_tls(server, *map(Path, args.tls))
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
