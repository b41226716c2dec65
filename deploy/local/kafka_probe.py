"""Wait until a Kafka broker answers a real metadata request; print its cluster id.

Used by ``deploy/local/kafka.sh``. A listening socket is not enough: a KRaft node accepts
connections before its metadata is loaded, so this asks for the cluster description (a
DescribeCluster request) and the topic list (a Metadata request) and succeeds only when both
answer.

Exit status: 0 ready (cluster id on stdout), 1 not ready before the deadline,
2 the watched process died first, 3 kafka-python is not installed in this interpreter.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _port_open(bootstrap: str) -> bool:
    host, _, port = bootstrap.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def _cluster_id(bootstrap: str, request_timeout_ms: int) -> str:
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="landmark-local-kafka-probe",
        request_timeout_ms=request_timeout_ms,
        api_version_auto_timeout_ms=request_timeout_ms,
        reconnect_backoff_max_ms=500,
    )
    try:
        cluster = admin.describe_cluster()
        admin.list_topics()
    finally:
        admin.close()
    cluster_id = cluster.get("cluster_id") if isinstance(cluster, dict) else None
    if not cluster_id:
        raise RuntimeError(f"DescribeCluster answered without a cluster id: {cluster!r}")
    return str(cluster_id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True, help="host:port of the broker")
    parser.add_argument("--timeout", type=float, default=0.0, help="seconds to keep trying")
    parser.add_argument("--pid", type=int, default=0, help="give up as soon as this pid exits")
    args = parser.parse_args(argv)

    try:
        import kafka  # noqa: F401
    except ImportError:
        print(f"kafka-python is not installed for {sys.executable}", file=sys.stderr)
        return 3
    # kafka-python logs every refused connection at WARNING/ERROR while the broker starts.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)

    deadline = time.monotonic() + args.timeout
    last_error: Exception | None = None
    while True:
        if args.pid and not _process_alive(args.pid):
            print(f"process {args.pid} exited before the broker was ready", file=sys.stderr)
            return 2
        if not _port_open(args.bootstrap):
            last_error = ConnectionRefusedError(f"nothing listens on {args.bootstrap}")
        else:
            try:
                print(_cluster_id(args.bootstrap, request_timeout_ms=3000))
                return 0
            except Exception as error:  # any failure means "not ready yet"
                last_error = error
        if time.monotonic() >= deadline:
            print(f"no metadata answer from {args.bootstrap}: {last_error!r}", file=sys.stderr)
            return 1
        time.sleep(0.25)


if __name__ == "__main__":
    sys.exit(main())
