"""``landmark-follow``: follow landmark-tag events (and optionally dead letters) as they arrive.

Reads without a consumer group by default (nothing committed, any number of followers), printing
one aligned line per event, or the event's JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from types import FrameType
from typing import TextIO

from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from schemas.dead_letter import DeadLetter
from schemas.errors import InputError
from schemas.tag_event import TagEvent
from worker.adapters.kafka import CONSUMER_SIZE_LIMITS
from worker.settings import (
    DEAD_LETTER_TOPIC,
    DEFAULT_BOOTSTRAP,
    TAGS_TOPIC,
    EnvDefaultsParser,
    non_negative_float,
    positive_int,
)


def format_tag_event(event: TagEvent) -> str:
    """One aligned line: time, image id, landmark (or '-'), confidence, latency, versions."""
    landmark = event.landmark.name if event.landmark is not None else "- (no landmark)"
    latency = f"{event.latency_ms:8.0f} ms" if event.latency_ms is not None else "       ? ms"
    return (
        f"{event.tagged_at:%H:%M:%S}  {event.image_id[:40]:<40}  {landmark[:28]:<28}  "
        f"{event.confidence:5.2f}  {latency}  model {event.model_version} "
        f"gallery {event.gallery_version}  {event.worker_id}"
    )


def format_dead_letter(letter: DeadLetter) -> str:
    """One line for a dead letter: time, original key, reason, message."""
    key = letter.original_key if letter.original_key is not None else "(no key)"
    return (
        f"{letter.failed_at:%H:%M:%S}  {key[:40]:<40}  DEAD LETTER {letter.reason.value}: "
        f"{letter.message[:120]}"
    )


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="landmark-follow", description="Print landmark-tag events as they arrive."
    )
    f = EnvDefaultsParser(parser, environ)
    f.add(
        "--bootstrap-servers",
        env="LANDMARK_KAFKA_BOOTSTRAP",
        default=DEFAULT_BOOTSTRAP,
        help="Kafka bootstrap servers",
    )
    f.add("--topic", env="LANDMARK_TAGS_TOPIC", default=TAGS_TOPIC, help="tag event topic")
    f.add(
        "--dead-letter-topic",
        env="LANDMARK_DLQ_TOPIC",
        default=DEAD_LETTER_TOPIC,
        help="dead-letter topic (read with --dead-letters)",
    )
    f.add_switch(
        "--dead-letters",
        env="LANDMARK_FOLLOW_DEAD_LETTERS",
        help="also follow the dead-letter topic",
    )
    f.add_switch(
        "--from-beginning",
        env="LANDMARK_FOLLOW_FROM_BEGINNING",
        help="start at the oldest event instead of the next new one",
    )
    f.add_switch(
        "--json",
        env="LANDMARK_FOLLOW_JSON",
        help="print each event as one JSON line (dead letters get kind=dead_letter)",
    )
    f.add(
        "--max-events",
        env="LANDMARK_FOLLOW_MAX_EVENTS",
        type=positive_int,
        default=None,
        help="stop after this many events (tag events plus dead letters)",
    )
    f.add(
        "--timeout",
        env="LANDMARK_FOLLOW_TIMEOUT",
        type=non_negative_float,
        default=None,
        help="stop after this many seconds without a new event",
    )
    f.add(
        "--group-id",
        env="LANDMARK_FOLLOW_GROUP_ID",
        default=None,
        help="consumer group to read (and commit) in; default: none",
    )
    return parser


def _consumer(args: argparse.Namespace, topics: list[str]) -> KafkaConsumer:
    consumer = KafkaConsumer(
        bootstrap_servers=args.bootstrap_servers,
        group_id=args.group_id,
        client_id="landmark-follow",
        auto_offset_reset="earliest" if args.from_beginning else "latest",
        enable_auto_commit=args.group_id is not None,
        **CONSUMER_SIZE_LIMITS,
    )
    if args.group_id is not None:
        consumer.subscribe(topics)
        return consumer
    partitions: list[TopicPartition] = []
    deadline = time.monotonic() + 30
    for topic in topics:
        found = consumer.partitions_for_topic(topic)
        while not found and time.monotonic() < deadline:
            time.sleep(0.2)
            found = consumer.partitions_for_topic(topic)
        partitions.extend(TopicPartition(topic, p) for p in sorted(found or ()))
    if not partitions:
        consumer.close()
        raise LookupError(f"none of the topics {topics} exists at {args.bootstrap_servers}")
    consumer.assign(partitions)
    if args.from_beginning:
        consumer.seek_to_beginning(*partitions)
    else:
        consumer.seek_to_end(*partitions)
        for tp in partitions:
            consumer.position(tp)  # resolve "end" now, so events published later are not skipped
    return consumer


def follow(consumer: KafkaConsumer, args: argparse.Namespace, out: TextIO) -> int:
    """Print events until --max-events, --timeout or a stop signal; returns the count."""
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    count = 0
    last_event = time.monotonic()
    while not stopping:
        if args.max_events is not None and count >= args.max_events:
            break
        if args.timeout is not None and time.monotonic() - last_event > args.timeout:
            break
        polled = consumer.poll(timeout_ms=200)
        for records in polled.values():
            for record in records:
                if args.max_events is not None and count >= args.max_events:
                    break
                out.write(
                    _render(record.topic == args.dead_letter_topic, record.value, args.json) + "\n"
                )
                count += 1
                last_event = time.monotonic()
        out.flush()
    return count


def _render(is_dead_letter: bool, value: bytes | None, as_json: bool) -> str:
    try:
        if is_dead_letter:
            letter = DeadLetter.from_json_bytes(value or b"")
            if as_json:
                return json.dumps({"kind": "dead_letter", **letter.to_dict()})
            return format_dead_letter(letter)
        event = TagEvent.from_json_bytes(value or b"")
        return json.dumps(event.to_dict()) if as_json else format_tag_event(event)
    except InputError as error:
        if as_json:
            return json.dumps({"kind": "invalid", "error": error.message})
        return f"(invalid event: {error.message})"


def main(argv: Sequence[str] | None = None) -> int:
    """Follow; exit 1 when --max-events was asked for and not reached."""
    args = build_parser(os.environ).parse_args(argv)
    topics = [args.topic] + ([args.dead_letter_topic] if args.dead_letters else [])
    try:
        consumer = _consumer(args, topics)
    except LookupError as error:
        print(f"landmark-follow: {error}", file=sys.stderr)
        return 2
    try:
        count = follow(consumer, args, sys.stdout)
    finally:
        consumer.close()
    if args.max_events is not None and count < args.max_events:
        print(
            f"landmark-follow: {count} of {args.max_events} events before the timeout",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
