"""What a committed batch adds to the metrics and the log."""

from __future__ import annotations

import structlog

from worker.observability.metrics import WorkerMetrics
from worker.outcome import BatchOutcome

log = structlog.get_logger("landmark.worker")


def report_committed_batch(
    metrics: WorkerMetrics, records: int, outcome: BatchOutcome, publish_s: float, commit_s: float
) -> None:
    """Count and log a batch whose outputs were acknowledged and whose offsets were committed.

    Args:
        metrics: The worker's metrics.
        records: How many records the batch had.
        outcome: The outputs published.
        publish_s: Seconds spent publishing.
        commit_s: Seconds spent committing.
    """
    m = metrics
    m.batch_size.observe(records)
    m.batches.inc()
    m.observe_stages({**outcome.stage_timings.as_dict(), "publish": publish_s, "commit": commit_s})
    tagged = sum(1 for e in outcome.tag_events if e.landmark is not None)
    m.observe_outcomes(
        tagged, len(outcome.tag_events) - tagged, [d.reason.value for d in outcome.dead_letters]
    )
    for event in outcome.tag_events:
        if event.latency_ms is not None:
            m.end_to_end_seconds.observe(event.latency_ms / 1000.0)
        log.debug(
            "tagged",
            image_id=event.image_id,
            landmark=event.landmark.landmark_id if event.landmark else None,
            confidence=round(event.confidence, 3),
        )
    for letter in outcome.dead_letters:
        log.warning(
            "dead-lettered",
            image_id=letter.original_key,
            reason=letter.reason.value,
            message=letter.message,
            partition=letter.source_partition,
            offset=letter.source_offset,
        )
    timings = {k: round(v, 4) for k, v in outcome.stage_timings.as_dict().items()}
    log.info(
        "batch committed",
        records=records,
        tagged=tagged,
        no_landmark=len(outcome.tag_events) - tagged,
        dead_lettered=len(outcome.dead_letters),
        publish_s=round(publish_s, 4),
        commit_s=round(commit_s, 4),
        **timings,
    )
