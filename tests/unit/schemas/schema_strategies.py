"""Hypothesis strategies that build valid contract objects."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import strategies as st

from schemas.dead_letter import DeadLetter
from schemas.errors import ReasonCode
from schemas.image_event import InlinePhoto, PhotoReference
from schemas.kafka_record import KafkaRecord
from schemas.manifest import ModelManifest
from schemas.preprocessing import PreprocessingSpec
from schemas.tag_event import Landmark, Neighbour, TagEvent
from schemas.vote import VoteSettings

# Printable text (no control characters, no surrogates), as ids and names are.
printable = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=40
)
versions = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-",
    min_size=1,
    max_size=64,
)
utc_datetimes = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)
# Any fixed offset: the contracts must normalise to UTC without changing the instant.
aware_datetimes = st.builds(
    lambda moment, minutes: moment.astimezone(timezone(timedelta(minutes=minutes))),
    utc_datetimes,
    st.integers(min_value=-23 * 60, max_value=23 * 60),
)
unit_floats = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
distances = st.floats(min_value=0.0, max_value=4.0, allow_nan=False)

landmarks = st.builds(Landmark, landmark_id=printable, name=printable)
neighbours = st.builds(
    Neighbour,
    reference_id=printable,
    landmark_id=printable,
    landmark_name=printable,
    distance=distances,
)
tag_events = st.builds(
    TagEvent,
    image_id=printable,
    landmark=st.none() | landmarks,
    confidence=unit_floats,
    neighbours=st.lists(neighbours, max_size=6).map(tuple),
    model_version=versions,
    gallery_version=versions,
    worker_id=printable,
    published_at=st.none() | aware_datetimes,
    tagged_at=aware_datetimes,
    latency_ms=st.none() | st.floats(min_value=0.0, max_value=1e9, allow_nan=False),
    trace_id=st.none() | printable,
)

_optional_header_text = st.none() | printable
inline_photos = st.builds(
    InlinePhoto,
    image_id=printable,
    data=st.binary(min_size=1, max_size=256),
    content_type=st.sampled_from(["image/jpeg", "image/png", "application/octet-stream"]),
    published_at=st.none() | aware_datetimes,
    source=_optional_header_text,
    trace_id=_optional_header_text,
)
uris = st.builds(
    lambda scheme, path: f"{scheme}://{path}",
    st.sampled_from(["file", "http", "https"]),
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1),
)
photo_references = st.builds(
    PhotoReference,
    image_id=printable,
    uri=uris,
    published_at=st.none() | aware_datetimes,
    source=_optional_header_text,
    trace_id=_optional_header_text,
)

kafka_records = st.builds(
    KafkaRecord,
    key=st.none() | st.binary(max_size=64),
    value=st.none() | st.binary(max_size=512),
    headers=st.lists(
        st.tuples(st.text(min_size=1, max_size=20), st.binary(max_size=40)), max_size=5
    ).map(tuple),
    topic=st.text(alphabet="abcdefghijklmnopqrstuvwxyz.-_", max_size=30),
    partition=st.integers(min_value=-1, max_value=1000),
    offset=st.integers(min_value=-1, max_value=2**62),
)
# Records with parts just over the dead letter's limits, so that some letters list `truncated`.
oversized_records = st.builds(
    KafkaRecord,
    key=st.none() | st.binary(min_size=1020, max_size=1030),
    value=st.none() | st.binary(max_size=64),
    headers=st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c" * 129]) | st.text(min_size=1, max_size=4),
            st.binary(max_size=8) | st.binary(min_size=1020, max_size=1030),
        ),
        max_size=36,
    ).map(tuple),
)
dead_letters = st.builds(
    DeadLetter.from_record,
    record=kafka_records | oversized_records,
    reason=st.sampled_from(list(ReasonCode)),
    message=printable | st.text(min_size=1990, max_size=2010),
    worker_id=printable,
    now=aware_datetimes,
    max_inline_bytes=st.integers(min_value=0, max_value=600),
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | printable,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(printable, children, max_size=3)
    ),
    max_leaves=10,
)
preprocessing_specs = st.builds(
    PreprocessingSpec,
    input_size=st.integers(min_value=8, max_value=1024),
    resize=st.sampled_from(["center_crop", "pad"]),
    max_encoded_bytes=st.integers(min_value=1, max_value=2**40),
    max_pixels=st.integers(min_value=1, max_value=2**40),
    min_side=st.integers(min_value=1, max_value=64),
)
vote_settings = st.builds(
    VoteSettings,
    k=st.integers(min_value=1, max_value=100),
    weighting=st.sampled_from(["uniform", "inverse_rank", "similarity"]),
    threshold=unit_floats,
    rule=st.sampled_from(["margin", "weighted_knn"]),
)
manifests = preprocessing_specs.flatmap(
    lambda spec: st.builds(
        ModelManifest,
        model_version=versions,
        backbone=printable,
        input_size=st.just(spec.input_size),
        embedding_dim=st.integers(min_value=1, max_value=4096),
        preprocessing=st.just(spec),
        vote=vote_settings,
        created_at=aware_datetimes,
        keras_version=versions,
        training=st.dictionaries(printable, json_values, max_size=4),
        evaluation=st.dictionaries(printable, json_values, max_size=4),
    )
)
