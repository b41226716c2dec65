"""kafka-python pieces the image consumer (:mod:`worker.adapters.kafka.consumer`) is built on:
its client with larger socket reads, and the listener of its group's rebalances."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from kafka import KafkaConsumer
from kafka.consumer.subscription_state import ConsumerRebalanceListener

from worker.ports import Partition


class GroupListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Hands kafka-python's rebalance callbacks to the image consumer: revoked, then the
    partitions held after the rebalance."""

    def __init__(
        self,
        on_revoked: Callable[[], None],
        on_assigned: Callable[[frozenset[Partition]], None],
    ) -> None:
        self._on_revoked = on_revoked
        self._on_assigned = on_assigned

    def on_partitions_revoked(self, revoked: Any) -> None:
        self._on_revoked()

    def on_partitions_assigned(self, assigned: Any) -> None:
        self._on_assigned(frozenset((tp.topic, tp.partition) for tp in assigned))


#: Bytes kafka-python asks its socket for in one ``recv``. Its default, 4 KiB, costs a camera-size
#: photo sent inline (1.4 MB) ~340 system calls and the loop's thread 2.6-3.1 ms of CPU; with
#: 128 KiB, 1.2-1.5 ms (512 such records from a 4-partition topic, five rounds; 64 KiB, 256 KiB
#: and 1 MiB: medians 2.1-2.2 ms, larger reads being served by glibc's mmap and unmapped again).
#: The pipelined loop then reads 1.4 MB photos ~45% faster (``bench/bench_loop.py``: Kafka to
#: memory 369-425 -> 526-566 photos/s) and 64 KB ones 5-10% faster.
SOCKET_READ_BYTES = 128 * 1024


class TunedKafkaConsumer(KafkaConsumer):  # type: ignore[misc]
    """kafka-python's consumer whose connections read :data:`SOCKET_READ_BYTES` at a time.

    ``sock_chunk_bytes`` is an option of kafka-python's client and connections that its consumer
    does not list (it refuses options it does not list, and hands all it lists to the client).
    """

    DEFAULT_CONFIG: ClassVar[dict[str, Any]] = {
        **KafkaConsumer.DEFAULT_CONFIG,
        "sock_chunk_bytes": SOCKET_READ_BYTES,
    }
