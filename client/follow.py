"""``landmark-follow``: follow landmark-tag events (and optionally dead letters) as they arrive.

Reads without a consumer group by default (nothing committed, any number of followers), printing
one aligned line per event, or the event's JSON with ``--json``.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any, ClassVar, Literal, TextIO

from kafka import KafkaConsumer
from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from configuration import load_settings, setting
from configuration.kafka import (
    CONSUMER_SIZE_LIMITS,
    DEAD_LETTER_TOPIC,
    TAGS_TOPIC,
    KafkaConnection,
    KafkaUnreachable,
    cannot_connect,
    check_connection,
)
from schemas.dead_letter import DeadLetter
from schemas.errors import InputError
from schemas.tag_event import TagEvent


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


class FollowSettings(KafkaConnection):
    """``landmark-follow``'s settings."""

    group_title: ClassVar[str] = "follow"

    topic: str = setting(TAGS_TOPIC, env="LANDMARK_TAGS_TOPIC", help="tag event topic")
    dead_letter_topic: str = setting(
        DEAD_LETTER_TOPIC,
        env="LANDMARK_DLQ_TOPIC",
        help="dead-letter topic (read with --dead-letters)",
    )
    dead_letters: bool = setting(
        False, env="LANDMARK_FOLLOW_DEAD_LETTERS", help="also follow the dead-letter topic"
    )
    from_beginning: bool = setting(
        False,
        env="LANDMARK_FOLLOW_FROM_BEGINNING",
        help="start at the oldest event instead of the next new one",
    )
    as_json: bool = setting(
        False,
        flag="--json",
        env="LANDMARK_FOLLOW_JSON",
        help="print each event as one JSON line (dead letters get kind=dead_letter)",
    )
    max_events: int | None = setting(
        None,
        ge=1,
        env="LANDMARK_FOLLOW_MAX_EVENTS",
        help="stop after this many events (tag events plus dead letters)",
    )
    timeout: float | None = setting(
        None,
        ge=0,
        env="LANDMARK_FOLLOW_TIMEOUT",
        help="stop after this many seconds without a new event",
    )
    group_id: str | None = setting(
        None,
        env="LANDMARK_FOLLOW_GROUP_ID",
        help="consumer group to read (and commit) in; default: none",
    )
    isolation_level: Literal["read_committed", "read_uncommitted"] = setting(
        "read_committed",
        env="LANDMARK_FOLLOW_ISOLATION_LEVEL",
        help="read_committed: only events of committed transactions (each photo once from "
        "exactly-once workers; at-least-once workers' events are all committed); "
        "read_uncommitted: also events of open or aborted transactions",
    )


def parse_settings(argv: Sequence[str] | None = None) -> FollowSettings:
    """``landmark-follow``'s settings from the command line and the environment."""
    return load_settings(
        FollowSettings,
        argv,
        prog="landmark-follow",
        description="Print landmark-tag events as they arrive.",
    )


def _consumer(
    settings: FollowSettings, topics: list[str], options: dict[str, Any]
) -> KafkaConsumer:
    consumer = KafkaConsumer(
        **options,
        group_id=settings.group_id,
        client_id="landmark-follow",
        auto_offset_reset="earliest" if settings.from_beginning else "latest",
        enable_auto_commit=settings.group_id is not None,
        isolation_level=settings.isolation_level,
        **CONSUMER_SIZE_LIMITS,
    )
    if settings.group_id is not None:
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
        raise LookupError(f"none of the topics {topics} exists at {settings.bootstrap_servers}")
    consumer.assign(partitions)
    if settings.from_beginning:
        consumer.seek_to_beginning(*partitions)
    else:
        consumer.seek_to_end(*partitions)
        for tp in partitions:
            consumer.position(tp)  # resolve "end" now, so events published later are not skipped
    return consumer


def follow(consumer: KafkaConsumer, settings: FollowSettings, out: TextIO) -> int:
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
        if settings.max_events is not None and count >= settings.max_events:
            break
        if settings.timeout is not None and time.monotonic() - last_event > settings.timeout:
            break
        polled = consumer.poll(timeout_ms=200)
        for records in polled.values():
            for record in records:
                if settings.max_events is not None and count >= settings.max_events:
                    break
                out.write(
                    _render(
                        record.topic == settings.dead_letter_topic, record.value, settings.as_json
                    )
                    + "\n"
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
    settings = parse_settings(argv)
    topics = [settings.topic] + ([settings.dead_letter_topic] if settings.dead_letters else [])
    try:
        options = settings.kafka_client_options()
        check_connection(options)
        consumer = _consumer(settings, topics, options)
    except LookupError as error:
        print(f"landmark-follow: {error}", file=sys.stderr)
        return 2
    except (KafkaError, KafkaUnreachable, OSError) as error:
        print(cannot_connect("landmark-follow", settings.bootstrap_servers, error), file=sys.stderr)
        return 2
    try:
        count = follow(consumer, settings, sys.stdout)
    finally:
        consumer.close()
    if settings.max_events is not None and count < settings.max_events:
        print(
            f"landmark-follow: {count} of {settings.max_events} events before the timeout",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
