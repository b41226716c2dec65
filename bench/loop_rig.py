"""What the loop benchmarks share (``bench_loop``, ``gpu/gpu_decode``): image events, in-memory
stand-ins for Kafka, and the worker loop built on them.

:func:`image_records` makes image events of photos, inline or referencing files;
:func:`camera_jpeg` makes a synthetic camera-size JPEG;
:class:`ReplaySource` replays records as an images topic of one partition that is never
rebalanced; :class:`CountingSink` counts what it is asked to publish and keeps nothing;
:func:`bench_service` is the real :class:`worker.service.WorkerService` on whatever of them;
:func:`stage_ms` reads how long its stages took a photo.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from schemas.image_event import ImageEvent, InlinePhoto, PhotoReference, encode_image_event
from schemas.kafka_record import KafkaRecord
from worker.service import WorkerService

NOW = datetime(2026, 11, 28, tzinfo=UTC)


def camera_jpeg(seed: int, width: int, height: int) -> bytes:
    """A camera-size JPEG: a gradient, shapes and 8x8-block noise (about 1.4 MB at 12 MP)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / width * 255, y / height * 255, (x + y) % 256], axis=-1)
    noise = rng.normal(0, 25, (height // 8, width // 8, 3)).repeat(8, 0).repeat(8, 1)
    out = io.BytesIO()
    Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(out, "JPEG", quality=90)
    return out.getvalue()


def image_records(
    photos: Sequence[bytes], photo_dir: Path | None = None, http_origin: str | None = None
) -> list[KafkaRecord]:
    """Image events of ``photos``: inline, or (with ``photo_dir``) written there as files and
    referenced by ``file://`` URIs, or by ``http_origin``'s URLs when a server serves the folder
    there (what a photo store's references cost the loop)."""
    out = []
    for i, data in enumerate(photos):
        event: ImageEvent
        if photo_dir is None:
            event = InlinePhoto(f"photo-{i}", data, "image/jpeg", published_at=NOW)
        else:
            path = photo_dir / f"photo-{i}.jpg"
            path.write_bytes(data)
            uri = path.as_uri() if http_origin is None else f"{http_origin}/{path.name}"
            event = PhotoReference(f"photo-{i}", uri, NOW)
        encoded = encode_image_event(event)
        out.append(KafkaRecord(key=encoded.key, value=encoded.value, headers=encoded.headers))
    return out


def bench_service(
    *,
    worker_id: str,
    model: Any,
    gallery: Any,
    source: Any,
    sink: Any,
    photo_dir: Path | None,
    batch: int,
    batch_max_wait_ms: int,
    decode_threads: int,
    batch_decoder: Any,
    http_origin: str | None = None,
    keep_alive: int = 8,
    metrics: Any = None,
) -> WorkerService:
    """The worker loop on the given parts; references are read under ``photo_dir`` or from
    ``http_origin`` (on this machine; ``keep_alive`` connections kept open); no model or gallery
    switch (the bench's export is not on disk), no lag updates during the run."""
    from worker.adapters.photo_fetcher import FetcherSettings, ReferenceFetcher
    from worker.observability.health import HealthState
    from worker.observability.metrics import WorkerMetrics
    from worker.settings import LoopSettings

    def refuse(*_: Any) -> Any:
        raise AssertionError("no model or gallery switch in a loop benchmark")

    return WorkerService(
        LoopSettings(
            worker_id=worker_id,
            model_dir=Path("/nonexistent"),
            batch_max_records=batch,
            batch_max_wait_ms=batch_max_wait_ms,
            decode_threads=decode_threads,
            reload_check_interval_s=3600.0,
            lag_interval_s=3600.0,
        ),
        model=model,
        gallery=gallery,
        source=source,
        sink=sink,
        fetcher=ReferenceFetcher(
            FetcherSettings(
                file_root=photo_dir,
                allowed_origins=frozenset({http_origin} if http_origin else ()),
                private_networks=frozenset({"127.0.0.0/8"} if http_origin else ()),
                keep_alive=keep_alive,
            )
        ),
        metrics=metrics if metrics is not None else WorkerMetrics(),
        health=HealthState(),
        load_model=refuse,
        open_gallery=refuse,
        batch_decoder=batch_decoder,
    )


def stage_ms(metrics: Any, photos: int) -> dict[str, float]:
    """Milliseconds a photo each stage of the loop took, from a worker's
    ``landmark_worker_stage_seconds`` histograms (each stage in the thread that runs it: the
    slowest bounds the pipelined loop)."""
    out: dict[str, float] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "landmark_worker_stage_seconds_sum":
                out[sample.labels["stage"]] = 1000.0 * sample.value / photos
    return out


class ReplaySource:
    """The images topic in memory: ``batches`` batches of the given records, then nothing."""

    def __init__(self, records: list[KafkaRecord], batch: int, batches: int) -> None:
        self._records, self._batch, self._left = records, batch, batches
        self._offset = 0
        self.on_empty: Callable[[], None] = lambda: None

    @property
    def assigned(self) -> frozenset[tuple[str, int]]:
        return frozenset({("images", 0)})

    @property
    def generation(self) -> int:
        return 0  # never rebalanced

    def poll_batch(self, max_records: int, max_wait_ms: int) -> list[KafkaRecord]:
        if self._left == 0:
            self.on_empty()
            return []
        self._left -= 1
        out = [
            replace(
                self._records[(self._offset + i) % len(self._records)],
                topic="images",
                partition=0,
                offset=self._offset + i,
            )
            for i in range(self._batch)
        ]
        self._offset += self._batch
        return out

    def commit(self, records: Sequence[KafkaRecord]) -> None:
        """Offsets are not kept."""

    def rewind(self, records: Sequence[KafkaRecord]) -> None:
        raise AssertionError("no failure expected in the GPU check")

    def lag(self) -> dict[tuple[str, int], int]:
        return {("images", 0): self._left * self._batch}

    def broker_reachable(self) -> bool:
        return True

    def close(self) -> None:
        """Nothing to leave."""


class CountingSink:
    """Counts what it is asked to publish; keeps nothing."""

    def __init__(self) -> None:
        self.tagged = 0
        self.dead_letters = 0

    def publish(self, tag_events: Sequence[Any], dead_letters: Sequence[Any]) -> None:
        self.tagged += len(tag_events)
        self.dead_letters += len(dead_letters)

    def close(self, timeout_s: float = 10.0) -> None:
        """Nothing to flush."""
