"""A photo store for the loop benchmarks: a folder served over HTTP/1.1 (or HTTPS), keep-alive.

Python's own ``http.server`` answers HTTP/1.0 by default (one connection a photo, whatever the
client does) and, asked for HTTP/1.1, writes the headers and the body in two sends under Nagle's
algorithm: a kept connection then waits on the client's delayed acknowledgement. Stores a worker
reads from (nginx, object stores) keep connections open and send without that delay; this server
does the same, in a process of its own so that its CPU is not the worker's.

    python bench/photo_server.py PORT FOLDER [--tls CERT KEY]
"""

from __future__ import annotations

import argparse
import functools
import ssl
import sys
from collections.abc import Sequence
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer


class _KeepAliveHandler(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        pass


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
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*args.tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
