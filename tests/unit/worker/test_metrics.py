"""WorkerMetrics: names, labels and the lag gauge's replacement semantics."""

from __future__ import annotations

from worker.observability.metrics import WorkerMetrics


def value(metrics: WorkerMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_outcomes_are_counted_by_outcome_and_reason() -> None:
    metrics = WorkerMetrics()
    metrics.observe_outcomes(3, 2, ["schema_violation", "schema_violation", "embedding_failed"])
    assert value(metrics, "landmark_worker_images_total", outcome="tagged", reason="") == 3
    assert value(metrics, "landmark_worker_images_total", outcome="no_landmark", reason="") == 2
    assert (
        value(
            metrics,
            "landmark_worker_images_total",
            outcome="dead_lettered",
            reason="schema_violation",
        )
        == 2
    )


def test_lag_gauge_drops_partitions_no_longer_assigned() -> None:
    metrics = WorkerMetrics()
    metrics.set_lag({("images", 0): 5, ("images", 1): 7})
    metrics.set_lag({("images", 1): 3})
    assert value(metrics, "landmark_worker_consumer_lag", topic="images", partition="0") is None
    assert value(metrics, "landmark_worker_consumer_lag", topic="images", partition="1") == 3


def test_versions_are_exported_as_info_labels() -> None:
    metrics = WorkerMetrics()
    metrics.set_versions("m1", "g1", "w1")
    assert (
        value(
            metrics,
            "landmark_worker_model_info",
            model_version="m1",
            gallery_version="g1",
            worker_id="w1",
        )
        == 1
    )


def test_stage_histograms_exist_before_the_first_batch() -> None:
    metrics = WorkerMetrics()
    for stage in ("decode", "embed", "search", "vote", "publish", "commit"):
        assert value(metrics, "landmark_worker_stage_seconds_count", stage=stage) == 0


def test_two_instances_do_not_share_a_registry() -> None:
    first, second = WorkerMetrics(), WorkerMetrics()
    first.batches.inc()
    assert value(second, "landmark_worker_batches_total") == 0


def test_reference_connections_are_counted_by_how_from_zero() -> None:
    metrics = WorkerMetrics()
    before = {
        how: metrics.registry.get_sample_value(
            "landmark_worker_reference_connections_total", {"how": how}
        )
        for how in ("new", "kept")
    }
    metrics.count_reference_connection("new")
    metrics.count_reference_connection("kept")
    metrics.count_reference_connection("kept")

    assert before == {"new": 0.0, "kept": 0.0}
    assert (
        metrics.registry.get_sample_value(
            "landmark_worker_reference_connections_total", {"how": "kept"}
        )
        == 2.0
    )
