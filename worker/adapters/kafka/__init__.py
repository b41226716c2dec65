"""Kafka adapters (kafka-python 2.3.x): the image consumer, the at-least-once publisher of tag
events and dead letters, and the per-partition transactional producers of the exactly-once mode.
"""

from worker.adapters.kafka.consumer import ImageConsumer
from worker.adapters.kafka.offsets import first_offsets, next_offsets, to_kafka_record
from worker.adapters.kafka.output import OutputPublisher, PublishError

__all__ = [
    "ImageConsumer",
    "OutputPublisher",
    "PublishError",
    "first_offsets",
    "next_offsets",
    "to_kafka_record",
]
