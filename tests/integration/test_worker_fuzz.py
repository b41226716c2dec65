"""A bounded, seeded fuzz run through a real worker: every record gets exactly one output.

Four thousand records with random keys, values, headers and references (:mod:`fuzz_records`), on
two partitions, then a few that the Kafka client cannot parse (each in a batch of its own: in a
shared batch the records after one are dead-lettered too, which the poison-record suite checks).
Valid photos must be tagged, broken records dead-lettered, each exactly once, and the worker must
be alive and ready at the end. Set ``LANDMARK_FUZZ_SEED`` to replay a seed.
"""

from __future__ import annotations

import os
import random

import pytest

from tests.integration.fuzz_records import (
    FuzzPlace,
    FuzzRecord,
    fuzz_records,
    non_utf8_header_name,
    small_photo,
)
from tests.integration.poison_rig import PoisonRig, Sent

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("LANDMARK_FUZZ_SEED", "1414"))
COUNT = 4000
UNPARSEABLE = 5


def _place(rig: PoisonRig, rng: random.Random) -> FuzzPlace:
    assert rig.reference_root is not None
    folder = rig.reference_root / "fuzz"
    folder.mkdir(exist_ok=True)
    files = []
    for index in range(4):
        path = folder / f"p{index}.jpg"
        path.write_bytes(small_photo(rng))
        files.append(path)
    return FuzzPlace(root=rig.reference_root, photo_files=tuple(files), host=rig.host)


def _sent(rig: PoisonRig, record: FuzzRecord, partition: int, offset: int) -> Sent:
    key = record.key.decode("utf-8", "replace") if record.key is not None else None
    return Sent(partition, offset, key, record.expect)


def test_every_fuzzed_record_gets_exactly_one_output(poison_rig: PoisonRig) -> None:
    rig = poison_rig
    rng = random.Random(SEED)
    place = _place(rig, rng)
    records = fuzz_records(rng, COUNT, place)
    partitions = [rng.randrange(2) for _ in records]

    futures = [
        rig.producer.send(
            rig.topics[0], key=r.key, value=r.value, headers=r.headers, partition=partition
        )
        for r, partition in zip(records, partitions, strict=True)
    ]
    rig.producer.flush(timeout=120)
    sent = [
        _sent(rig, record, partition, future.get(timeout=60).offset)
        for record, partition, future in zip(records, partitions, futures, strict=True)
    ]
    for index in range(UNPARSEABLE):
        record = non_utf8_header_name(rng, COUNT + index, place)
        partition = rng.randrange(2)
        metadata = rig.producer.send(
            rig.topics[0],
            key=record.key,
            value=record.value,
            headers=record.headers,
            partition=partition,
        ).get(timeout=60)
        sent.append(_sent(rig, record, partition, metadata.offset))

    rig.check(sent, timeout_s=180)
