"""Waiting for freshly created topics: a partition without a leader refuses produce and fetch."""

from __future__ import annotations

import time
from typing import Any


def wait_for_leaders(admin: Any, topic: str, partitions: int, timeout_s: float = 30.0) -> None:
    """Block until every partition of ``topic`` has a leader (``admin``: a KafkaAdminClient).

    Raises:
        TimeoutError: some partition still has no leader after ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    led = 0
    while time.monotonic() < deadline:
        described = admin.describe_topics([topic])
        for entry in described:
            if entry.get("topic") == topic and not entry.get("error_code"):
                led = sum(1 for p in entry.get("partitions", ()) if p.get("leader", -1) >= 0)
        if led >= partitions:
            return
        time.sleep(0.1)
    raise TimeoutError(
        f"topic {topic!r}: {led} of {partitions} partitions have a leader after {timeout_s:.0f} s"
    )
