"""The Kafka connection group, shared by the worker, the client tools, the demo and the benches."""

from __future__ import annotations

from typing import Any, ClassVar

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


class KafkaConnection(CommandSettings):
    """Where the brokers are."""

    group_title: ClassVar[str] = "Kafka connection"

    bootstrap_servers: str = setting(
        DEFAULT_BOOTSTRAP,
        env="LANDMARK_KAFKA_BOOTSTRAP",
        help="Kafka bootstrap servers (host:port, comma-separated)",
    )

    def kafka_client_options(self) -> dict[str, Any]:
        """Keyword arguments every kafka-python client of the project takes."""
        return {"bootstrap_servers": self.bootstrap_servers}
