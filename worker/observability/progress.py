"""The loop's signs of progress, as readiness sees them: searches and the broker's answers."""

from __future__ import annotations

import numpy as np

from schemas.tag_event import Neighbour
from worker.error_kinds import error_kind
from worker.observability.health import HealthState
from worker.observability.metrics import WorkerMetrics
from worker.ports import ReferenceIndex, Source


class ObservedIndex:
    """A reference index whose searches tell readiness whether Milvus answers.

    Args:
        index: The gallery searched.
        health: Told of each search that succeeds (``milvus``, ``search``) or fails.
    """

    def __init__(self, index: ReferenceIndex, health: HealthState) -> None:
        self._index = index
        self._health = health
        self.gallery_version = index.gallery_version
        self.model_version = index.model_version

    def search(self, embeddings: np.ndarray, k: int) -> list[list[Neighbour]]:
        try:
            found = self._index.search(embeddings, k)
        except Exception as error:
            self._health.failed("milvus", error_kind(error))
            raise
        self._health.succeeded("milvus", "search")
        return found


class BrokerWatch:
    """Tells readiness, once a loop iteration, whether the consumer hears from the broker.

    A consumer whose broker is gone polls nothing, as an idle one does; what tells them apart
    is the group coordinator's answers to the consumer's heartbeats.

    Args:
        source: The image consumer.
        health: Told ``kafka`` succeeded or failed.
        metrics: Counts each time the broker falls silent (``errors_total{kind="kafka_silent"}``).
    """

    def __init__(self, source: Source, health: HealthState, metrics: WorkerMetrics) -> None:
        self._source = source
        self._health = health
        self._metrics = metrics
        self._silent = False

    def check(self) -> None:
        if self._source.broker_reachable():
            self._silent = False
            self._health.succeeded("kafka")
            return
        if not self._silent:
            self._metrics.errors.labels(kind="kafka_silent").inc()
        self._silent = True
        self._health.failed("kafka", "the group coordinator does not answer")
