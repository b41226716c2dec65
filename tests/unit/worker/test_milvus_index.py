"""The pure parts of the Milvus search adapter: descriptions, hits, errors, backoff.

The adapter's calls to a real Milvus are covered in tests/integration/test_milvus_gallery.py;
here the inputs are the plain dictionaries pymilvus returns, written out by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from pymilvus.exceptions import MilvusException, MilvusUnavailableException

from schemas.gallery import collection_properties
from worker.adapters.milvus.description import check_compatible, describe_gallery
from worker.adapters.milvus.errors import (
    GalleryMismatchError,
    GalleryUnavailableError,
    is_collection_gone,
    is_not_loaded,
    is_timeout,
    is_transient,
)
from worker.adapters.milvus.hits import distance_of, neighbours_from_hits
from worker.adapters.milvus.retries import RetryPolicy, backoff_delays


def collection_info(dim: int = 4, properties: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "collection_name": "landmarks_abc_v1",
        "fields": [
            {"name": "reference_id", "params": {"max_length": 64}, "is_primary": True},
            {"name": "embedding", "params": {"dim": dim}},
        ],
        "properties": collection_properties("0123456789abcdef", "v1", dim)
        if properties is None
        else properties,
    }


def hit(reference_id: str, similarity: float, landmark: str = "tajmahal") -> dict[str, Any]:
    return {
        "reference_id": reference_id,
        "distance": similarity,
        "entity": {"landmark_id": landmark, "landmark_name": landmark.title()},
    }


def test_description_reads_versions_dimension_and_index() -> None:
    index = {"index_type": "HNSW", "metric_type": "COSINE", "M": 16}

    description = describe_gallery("landmarks", "landmarks_abc_v1", collection_info(), index)

    assert (description.model_version, description.gallery_version) == ("0123456789abcdef", "v1")
    assert description.embedding_dim == 4
    assert (description.layout.index_type, description.layout.metric) == ("HNSW", "COSINE")
    assert description.layout.index_params == {"M": 16}


def test_description_without_index_is_an_exact_cosine_gallery() -> None:
    description = describe_gallery("landmarks", "c", collection_info(), None)

    assert (description.layout.index_type, description.layout.metric) == ("FLAT", "COSINE")


def test_index_with_a_metric_for_other_vectors_is_refused() -> None:
    with pytest.raises(GalleryMismatchError, match="HAMMING"):
        describe_gallery("landmarks", "c", collection_info(), {"metric_type": "HAMMING"})


def test_collection_without_version_properties_is_not_a_gallery() -> None:
    with pytest.raises(GalleryMismatchError, match="lacks the properties"):
        describe_gallery("landmarks", "c", collection_info(properties={}), None)


def test_collection_without_embedding_field_is_not_a_gallery() -> None:
    info = collection_info()
    info["fields"] = [{"name": "vector", "params": {"dim": 4}}]

    with pytest.raises(GalleryMismatchError, match="no vector field"):
        describe_gallery("landmarks", "c", info, None)


def test_declared_dimension_contradicting_the_schema_is_refused() -> None:
    info = collection_info(dim=4, properties=collection_properties("0123456789abcdef", "v1", 8))

    with pytest.raises(GalleryMismatchError, match="embedding_dim=8"):
        describe_gallery("landmarks", "c", info, None)


def test_compatible_gallery_passes_the_check() -> None:
    description = describe_gallery("landmarks", "c", collection_info(), None)

    check_compatible(description, "0123456789abcdef", 4)


def test_other_dimension_is_a_mismatch_naming_both_sides() -> None:
    description = describe_gallery("landmarks", "c", collection_info(), None)

    with pytest.raises(GalleryMismatchError, match=r"4-dimensional.*makes 8"):
        check_compatible(description, "0123456789abcdef", 8)


def test_other_model_version_is_a_mismatch_naming_both_versions() -> None:
    description = describe_gallery("landmarks", "c", collection_info(), None)

    with pytest.raises(GalleryMismatchError, match=r"0123456789abcdef.*ffffffffffffffff"):
        check_compatible(description, "ffffffffffffffff", 4)


@pytest.mark.parametrize(
    ("score", "metric", "expected"),
    [(1.0, "COSINE", 0.0), (0.0, "COSINE", 2.0), (-1.0, "IP", 4.0), (0.5, "L2", 0.5)],
)
def test_scores_become_squared_distances(score: float, metric: str, expected: float) -> None:
    assert distance_of(score, metric) == pytest.approx(expected)


def test_rounding_beyond_one_is_clamped_to_distance_zero() -> None:
    assert distance_of(1.0000001, "COSINE") == 0.0


def test_hits_become_neighbours_nearest_first() -> None:
    hits = [hit("b", 0.5), hit("a", 0.9, "charminar"), hit("c", 0.7)]

    neighbours = neighbours_from_hits(hits, "COSINE")

    assert [n.reference_id for n in neighbours] == ["a", "c", "b"]
    assert neighbours[0].landmark_id == "charminar"
    assert neighbours[0].landmark_name == "Charminar"
    assert neighbours[0].distance == pytest.approx(0.2)


def test_equal_distances_are_ordered_by_reference_id() -> None:
    neighbours = neighbours_from_hits([hit("z", 0.5), hit("m", 0.5)], "COSINE")

    assert [n.reference_id for n in neighbours] == ["m", "z"]


def test_hit_with_only_an_id_key_keeps_its_reference_id() -> None:
    raw = {"id": "r1", "distance": 1.0, "entity": {"landmark_id": "x", "landmark_name": "X"}}

    assert neighbours_from_hits([raw], "COSINE")[0].reference_id == "r1"


@pytest.mark.parametrize(
    "error",
    [
        MilvusException(code=grpc.StatusCode.UNAVAILABLE, message="failed to connect"),
        MilvusException(code=grpc.StatusCode.DEADLINE_EXCEEDED, message="slow"),
        MilvusException(code=8, message="rate limit exceeded"),
        MilvusUnavailableException(message="server unavailable"),
        ConnectionRefusedError(),
        # Milvus 2.3 standalone while it recovers from a restart (pymilvus's words around it).
        MilvusException(
            code=65535,
            message="[search] Retry timeout: 2s, message=proxy TaskCondition context Done",
        ),
    ],
)
def test_unreachable_or_overloaded_server_errors_are_transient(error: BaseException) -> None:
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        MilvusException(code=100, message="collection 'x' does not exist"),
        MilvusException(code=1100, message="invalid parameter: dim"),
        ValueError("bad shape"),
    ],
)
def test_errors_about_the_request_are_not_transient(error: BaseException) -> None:
    assert not is_transient(error)


@pytest.mark.parametrize(
    "message",
    [
        "collection 'x' does not exist",  # Milvus Lite
        "collection not found[database=default][collection=x]",  # Milvus 2.3
    ],
)
def test_missing_collection_is_recognised(message: str) -> None:
    assert is_collection_gone(MilvusException(code=100, message=message))
    assert not is_collection_gone(MilvusException(code=1, message="disk full"))


@pytest.mark.parametrize(
    "message",
    [
        "Collection 'x' is in state 'released'; call load() before search/get/query",  # Lite
        "failed to search: collection not loaded[collection=470761549837369358]",  # Milvus 2.3
    ],
)
def test_released_collection_is_recognised(message: str) -> None:
    error = MilvusException(code=101, message=message)

    assert is_not_loaded(error)
    assert not is_collection_gone(error)
    assert not is_not_loaded(MilvusException(code=100, message="collection 'x' does not exist"))


def test_backoff_doubles_and_is_capped() -> None:
    assert backoff_delays(5, 0.5, max_backoff_s=3.0) == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_no_retries_means_no_waits() -> None:
    assert backoff_delays(0, 0.5) == []


def failing(errors: list[Exception], result: str = "answer") -> Callable[[], str]:
    """A call that raises ``errors`` one by one, then returns ``result``."""

    def call() -> str:
        if errors:
            raise errors.pop(0)
        return result

    return call


def test_transient_failures_are_retried_after_the_backoff_waits() -> None:
    waits: list[float] = []
    policy = RetryPolicy([0.1, 0.2], waits.append, alias="landmarks")
    unavailable = [MilvusUnavailableException(message="server unavailable") for _ in range(2)]

    assert policy.call("search", failing(unavailable)) == "answer"
    assert waits == [0.1, 0.2]


def test_a_failure_after_the_last_retry_is_gallery_unavailable() -> None:
    policy = RetryPolicy([0.1], lambda _s: None, alias="landmarks")
    unavailable = [MilvusUnavailableException(message="server unavailable") for _ in range(2)]

    with pytest.raises(GalleryUnavailableError, match="search failed for alias 'landmarks'"):
        policy.call("search", failing(unavailable))


def test_a_request_error_is_not_retried() -> None:
    waits: list[float] = []
    policy = RetryPolicy([0.1], waits.append, alias="landmarks")
    invalid = [MilvusException(code=1100, message="invalid parameter: dim")]

    with pytest.raises(GalleryUnavailableError, match="after 1 attempt"):
        policy.call("search", failing(invalid))
    assert waits == []


def test_every_failed_attempt_is_told_even_when_a_retry_succeeds() -> None:
    """A search that times out twice and then answers is a stall the metrics must count."""
    told: list[tuple[str, bool]] = []
    policy = RetryPolicy(
        [0.1, 0.2],
        lambda _s: None,
        alias="landmarks",
        on_failure=lambda what, error: told.append((what, is_timeout(error))),
    )
    deadline = [MilvusException(code=1, message="rpc deadline exceeded") for _ in range(2)]

    assert policy.call("search", failing(deadline)) == "answer"
    assert told == [("search", True), ("search", True)]


def test_a_refused_connection_is_not_a_timeout() -> None:
    assert not is_timeout(MilvusUnavailableException(message="connection refused"))
