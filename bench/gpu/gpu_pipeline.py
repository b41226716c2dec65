"""GPU check of the worker's core: decode → embed → search → vote on batches, against decode alone.

Run on the GPU machine (JAX, no TensorFlow, no Kafka or Milvus there)::

    KERAS_BACKEND=jax python bench/gpu/gpu_pipeline.py --export .gpu/model

The worker's pure core (``worker.core.process_batch``) runs on real inline image events with the
worker's Keras embedder on the GPU and its decode pool (threads over all cores); the gallery is an
exact kNN over random unit references in numpy (Milvus does not run there), the same search the
worker asks Milvus for. Prints images/s of the core and of the shared decode function alone, with
the same threads on the same photos: a GPU worker cannot beat decoding, and the ratio says how
close to that bound it gets. Kafka's consume/publish and the Milvus round trip are not included.
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np
from gpu_embed import camera_jpeg  # the same synthetic camera photos as the embed check


class ExactGallery:
    """Exact squared-L2 kNN over random unit references (what the worker asks Milvus for)."""

    gallery_version = "gpu-check"

    def __init__(self, size: int, dim: int, model_version: str, landmarks: int = 1000) -> None:
        rng = np.random.default_rng(7)
        vectors = rng.normal(size=(size, dim)).astype(np.float32)
        self._vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        self._landmarks = [f"landmark-{i % landmarks}" for i in range(size)]
        self.model_version = model_version

    def search(self, embeddings: np.ndarray, k: int) -> list:
        from schemas.tag_event import Neighbour

        distances = 2.0 - 2.0 * embeddings @ self._vectors.T
        nearest = np.argsort(distances, axis=1)[:, :k]
        return [
            [
                Neighbour(f"ref-{j}", self._landmarks[j], self._landmarks[j], float(row[j]))
                for j in order
            ]
            for row, order in zip(distances, nearest, strict=True)
        ]


class NoReferences:
    def fetch(self, uri: str) -> bytes:  # every event here is inline
        raise AssertionError(f"unexpected reference {uri}")

    def abort_in_flight(self) -> None:
        """Nothing to cut: no fetch ever starts."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export", type=Path, default=Path(".gpu/model"))
    parser.add_argument("--photos", type=int, default=16, help="distinct photos, cycled")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--gallery", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    from schemas.image_event import InlinePhoto, encode_image_event
    from schemas.preprocessing import decode_photo
    from worker.adapters.keras_embedder import KerasEmbedder
    from worker.core import process_batch

    embedder = KerasEmbedder.from_export(args.export)
    embedder.warm_up((args.batch,))
    spec = embedder.manifest.preprocessing
    vote = embedder.manifest.vote
    gallery = ExactGallery(args.gallery, embedder.embedding_dim, embedder.model_version)
    with ThreadPoolExecutor(args.threads) as pool:
        photos = list(pool.map(camera_jpeg, range(args.photos)))
    records = [
        encode_image_event(InlinePhoto(f"img-{i}", photos[i % len(photos)], "image/jpeg"))
        for i in range(args.batch)
    ]
    size_mb = np.mean([len(p) for p in photos]) / 1e6
    rows: list[tuple[str, str]] = []
    with ThreadPoolExecutor(args.threads) as pool:
        blobs = [r.value for r in records]
        list(pool.map(lambda b: decode_photo(b, spec), blobs))  # warm-up
        started = time.perf_counter()
        for _ in range(args.batches):
            list(pool.map(lambda b: decode_photo(b, spec), blobs))
        decode_rate = args.batch * args.batches / (time.perf_counter() - started)
        rows.append((f"decode alone, {args.threads} threads", f"{decode_rate:,.0f} img/s"))

        def one_batch():
            return process_batch(
                records,
                embedder=embedder,
                index=gallery,
                fetcher=NoReferences(),
                spec=spec,
                vote=vote,
                worker_id="gpu-check",
                clock=lambda: datetime.now(UTC),
                decode_pool=pool,
            )

        one_batch()  # warm-up
        stages: dict[str, float] = {}
        started = time.perf_counter()
        for _ in range(args.batches):
            outcome = one_batch()
            assert len(outcome.tag_events) == args.batch, outcome.dead_letters[:1]
            for name, seconds in outcome.stage_timings.as_dict().items():
                stages[name] = stages.get(name, 0.0) + seconds
        core_rate = args.batch * args.batches / (time.perf_counter() - started)
    rows.append((f"worker core (process_batch), batch {args.batch}", f"{core_rate:,.0f} img/s"))
    rows.append(("core / decode alone", f"{core_rate / decode_rate:.2f}"))
    images = args.batch * args.batches
    for name, seconds in stages.items():
        rows.append((f"  stage {name}", f"{1000 * seconds / images:.2f} ms a photo"))
    import jax

    print(
        f"\ndevice {jax.devices()[0]}, {os.cpu_count()} CPUs, photos {args.photos} distinct "
        f"12 MP JPEGs of {size_mb:.1f} MB, input {spec.input_size} px, gallery "
        f"{args.gallery:,} x {embedder.embedding_dim}, k {vote.k}\n"
    )
    print("| what | figure |\n| --- | --- |")
    for what, figure in rows:
        print(f"| {what} | {figure} |")


if __name__ == "__main__":
    main()
