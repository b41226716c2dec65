"""The loop benchmarks' rig reads a worker's stage times as the worker records them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))

from loop_rig import stage_ms

from worker.observability.metrics import STAGES, WorkerMetrics


def test_stage_milliseconds_a_photo_come_from_the_workers_stage_histograms() -> None:
    metrics = WorkerMetrics()
    for seconds in (0.2, 0.6):  # two batches
        metrics.stage_seconds.labels(stage="decode").observe(seconds)
    metrics.stage_seconds.labels(stage="embed").observe(0.1)
    spent = stage_ms(metrics, photos=400)
    assert list(spent) == list(STAGES)  # every stage, in the loop's order
    assert spent["decode"] == pytest.approx(2.0) and spent["embed"] == pytest.approx(0.25)
    assert spent["commit"] == 0.0
