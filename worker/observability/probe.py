"""``python -m worker.observability.probe [healthz|readyz]``: ask this host's worker how it is.

The container image's ``HEALTHCHECK`` (and anyone on the box) runs it: it reads the worker's
status address from the same variables the worker reads (``LANDMARK_HTTP_HOST``,
``LANDMARK_HTTP_PORT``), asks ``/healthz`` (or ``/readyz``) there, prints the answer and exits 0
when the worker answered 200, 1 otherwise. A worker listening on every address (``0.0.0.0``,
``::``) is asked on loopback. Only the standard library is imported, so a probe every few seconds
costs a few milliseconds, not a Keras start-up.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence

#: The worker's variables and defaults (worker/settings.py: http_host, http_port).
HOST_VARIABLE = "LANDMARK_HTTP_HOST"
PORT_VARIABLE = "LANDMARK_HTTP_PORT"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9108
PATHS = ("healthz", "readyz")
_EVERY_ADDRESS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def probe_url(environ: Mapping[str, str], path: str = "healthz") -> str:
    """The URL of ``/<path>`` on the worker that the variables in ``environ`` describe.

    Raises:
        ValueError: an unknown path or a port that is not a number from 1 to 65535.
    """
    if path not in PATHS:
        raise ValueError(f"unknown path {path!r}: one of {', '.join(PATHS)}")
    host = environ.get(HOST_VARIABLE, DEFAULT_HOST).strip()
    host = _EVERY_ADDRESS.get(host, host)
    port_text = environ.get(PORT_VARIABLE, "").strip() or str(DEFAULT_PORT)
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{PORT_VARIABLE}={port_text!r} is not a port from 1 to 65535")
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{int(port_text)}/{path}"


def probe(url: str, timeout_s: float = 3.0) -> tuple[bool, str]:
    """Whether ``url`` answered 200, and one line saying what it answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            body = response.read(2048).decode("utf-8", "replace").strip()
            return response.status == 200, f"{response.status} {body}"
    except urllib.error.HTTPError as error:
        body = error.read(2048).decode("utf-8", "replace").strip()
        return False, f"{error.code} {body}"
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        return False, f"no answer from {url}: {reason}"


def main(argv: Sequence[str] | None = None) -> int:
    """Probe ``/healthz`` (default) or ``/readyz``; 0 when the worker answered 200."""
    args = list(sys.argv[1:] if argv is None else argv)
    path = args[0] if args else "healthz"
    try:
        url = probe_url(os.environ, path)
    except ValueError as error:
        print(f"probe: {error}", file=sys.stderr)
        return 2
    ok, answer = probe(url)
    print(answer if ok else f"probe: {answer}", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
