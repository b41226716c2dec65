"""GPU decoding check: nvImageCodec alone, the worker's GPU decoder, bare embed, and the pipelined
worker loop with the GPU and the CPU decoder, on camera-size and on ~448 px photos.

Run on the GPU machine (JAX with CUDA, nvImageCodec and CuPy; no TensorFlow, Kafka or Milvus)::

    KERAS_BACKEND=jax python bench/gpu/gpu_decode.py --export .gpu/model --photos .gpu/photos

What each figure is:

* ``nvImageCodec decode``: ``Decoder.decode`` of a batch of JPEGs into device images, alone;
  then with one kind of backend only (``HW_GPU_ONLY``: the hardware JPEG decoders;
  ``GPU_ONLY``: CUDA; ``HYBRID_CPU_GPU``: Huffman on the CPU), and two batches at once (two
  threads), to see whether the preparing stage should keep two batches decoding.
* ``GPU decoder``: the worker's ``GpuPhotoDecoder.decode``: nvImageCodec, then crop, box
  reduction, Lanczos resize, orientation and blank check on the device (JAX).
* ``CPU decoder``: the worker's CPU path (``decode_photo`` with the blank check) on a thread a core.
* ``bare embed``: the worker's ``KerasEmbedder`` on a batch already on the device.
* ``worker loop``: the real ``WorkerService`` (pipelined: decode of batch n+1, embedding of n,
  search, vote and publish of n-1 overlap) on image events held in memory, an exact kNN over random
  unit references on the device instead of Milvus, and a sink that keeps nothing instead of Kafka;
  the photos inline in the events, or in files the events reference (``file://``, read by the
  worker's fetcher in the decoding threads: what a photo store costs instead of a fat topic;
  ``bench/bench_loop.py`` measures the consumer's side on a machine with Kafka).
* agreement: GPU-decoded against CPU-decoded pictures of the same photos (mean absolute
  difference in grey levels, and the cosine of their embeddings).

``--cpu-check`` runs the same code on a machine without a GPU (Pillow standing in for
nvImageCodec, JAX on the CPU, small sizes) to check the script before spending GPU time; with a
small model and few photos it takes half a minute on 2 cores::

    KERAS_BACKEND=jax .venv/bin/python bench/gpu/gpu_decode.py --cpu-check \
        --export .run/bench/train/model --photos DIR --camera 4 --batch 8 --batches 3 --threads 2

Each worker-loop row is followed by its stages' milliseconds a photo (``decode`` is the preparing
thread's, the GPU decoder's batch call included; ``embed`` the model's; ``search``, ``vote`` and
``publish`` the publishing thread's): the largest is what bounds the loop.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np

from schemas.preprocessing import decode_photo
from schemas.tag_event import Neighbour

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the bench's own modules
from loop_rig import (
    CountingSink,
    ReplaySource,
    bench_service,
    camera_jpeg,
    image_records,
    stage_ms,
)


def timed(action: Callable[[], Any], count: int, rounds: int) -> float:
    """Items a second of the best of ``rounds`` runs of ``action`` (``count`` items each)."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - started)
    return count / best


class DeviceGallery:
    """Exact kNN (squared L2 on unit rows) over random references, on the accelerator."""

    gallery_version = "gpu-check"

    def __init__(self, size: int, dim: int, model_version: str, landmarks: int = 1000) -> None:
        import jax.numpy as jnp

        rng = np.random.default_rng(7)
        vectors = rng.normal(size=(size, dim)).astype(np.float32)
        self._vectors = jnp.asarray(vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
        self._landmarks = [f"landmark-{i % landmarks}" for i in range(size)]
        self.model_version = model_version

    def search(self, embeddings: np.ndarray, k: int) -> list[list[Neighbour]]:
        import jax

        similarity = jax.numpy.asarray(embeddings) @ self._vectors.T
        values, indices = jax.lax.top_k(similarity, k)
        distances, nearest = 2.0 - 2.0 * np.asarray(values), np.asarray(indices)
        return [
            [
                Neighbour(f"ref-{j}", self._landmarks[j], self._landmarks[j], float(d))
                for j, d in zip(row, dist, strict=True)
            ]
            for row, dist in zip(nearest, distances, strict=True)
        ]

    def check_compatible(self, model_version: str, embedding_dim: int) -> None:
        """Built for any model here."""

    def refresh(self) -> bool:
        return False

    def close(self) -> None:
        """Nothing to release."""


def run_loop(
    model: Any,
    gallery: DeviceGallery,
    photos: list[bytes],
    batch: int,
    batches: int,
    threads: int,
    batch_decoder: Any,
    by_reference: bool = False,
) -> tuple[float, CountingSink, dict[str, float]]:
    """Photos a second of the pipelined worker loop over ``batches`` batches (after a warm-up),
    and the milliseconds a photo of each of its stages; ``by_reference``: the events reference
    the photos as files instead of carrying them."""
    from worker.observability.metrics import WorkerMetrics

    photo_dir = Path(tempfile.mkdtemp(prefix="gpu-check-")) if by_reference else None
    records = image_records(photos, photo_dir)
    results = []
    for count in (2, batches):  # a short warm-up run (compiles), then the measured one
        source, sink = ReplaySource(records, batch, count), CountingSink()
        metrics = WorkerMetrics()
        service = bench_service(
            worker_id="gpu-check",
            model=model,
            gallery=gallery,
            source=source,
            sink=sink,
            photo_dir=photo_dir,
            batch=batch,
            batch_max_wait_ms=0,
            decode_threads=threads,
            batch_decoder=batch_decoder,
            metrics=metrics,
        )
        source.on_empty = lambda s=service: s.stop() if s.idle else None
        started = time.perf_counter()
        runner = threading.Thread(target=service.run)
        runner.start()
        runner.join()
        rate = count * batch / (time.perf_counter() - started)
        results.append((rate, sink, stage_ms(metrics, count * batch)))
    if photo_dir is not None:
        shutil.rmtree(photo_dir)
    return results[-1]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export", type=Path, required=True, help="model export (288 px)")
    parser.add_argument("--photos", type=Path, help="folder of ~448 px JPEGs (the shared photos)")
    parser.add_argument("--camera", type=int, default=16, help="distinct synthetic 12 MP photos")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--batches", type=int, default=12, help="batches of each loop run")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, help="also write the table here (markdown)")
    parser.add_argument("--cpu-check", action="store_true", help="no GPU: a smoke test")
    args = parser.parse_args(argv)
    from worker.adapters.allocator import tune_allocator

    print(f"allocator: {tune_allocator()} (as landmark-worker sets it)")

    import jax

    from worker.adapters.gpu_decode.decoder import GpuPhotoDecoder
    from worker.adapters.keras_embedder import KerasEmbedder
    from worker.observability.logs import configure_logging

    configure_logging("console", "warning")

    backends: dict[str, Callable[[list[bytes]], list[Any]]] = {}
    if args.cpu_check:
        sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "unit" / "worker"))
        from test_gpu_decode import numpy_to_bucket, pillow_decode_many

        decoder, decode_many = (
            GpuPhotoDecoder(pillow_decode_many, numpy_to_bucket),
            pillow_decode_many,
        )
        camera_size = (800, 600)
    else:
        from nvidia import nvimgcodec

        decoder = GpuPhotoDecoder.on_nvidia_gpu()
        params = nvimgcodec.DecodeParams(
            apply_exif_orientation=False, color_spec=nvimgcodec.ColorSpec.SRGB
        )

        def decoding_with(raw: Any) -> Callable[[list[bytes]], list[Any]]:
            def decode(photos: list[bytes]) -> list[Any]:
                images = raw.decode([nvimgcodec.CodeStream(p) for p in photos], params=params)
                import cupy as cp

                cp.cuda.Device().synchronize()
                return list(images)

            return decode

        decode_many = decoding_with(nvimgcodec.Decoder())
        kinds = nvimgcodec.BackendKind
        for kind in ("HW_GPU_ONLY", "GPU_ONLY", "HYBRID_CPU_GPU"):
            try:  # the decoder with one kind of backend only, to see which one pays
                only = nvimgcodec.Decoder(backends=[nvimgcodec.Backend(getattr(kinds, kind))])
                backends[kind] = decoding_with(only)
            except Exception as error:  # not in this build or on this GPU
                print(f"backend {kind} left out: {error!r}", flush=True)

        camera_size = (4000, 3000)

    model = KerasEmbedder.from_export(args.export)
    spec = model.manifest.preprocessing
    size = spec.input_size
    lines = [
        f"device {jax.devices()[0].device_kind} ({jax.devices()[0].platform}), "
        f"{os.cpu_count()} CPUs, model {model.model_version} {size} px, batch {args.batch}, "
        f"{args.threads} CPU decode threads",
        "",
        "| photos | what | photos/s |",
        "| --- | --- | ---: |",
    ]

    def row(label: str, what: str, value: float) -> None:
        lines.append(f"| {label} | {what} | {value:,.0f} |")
        print(lines[-1], flush=True)

    sets: dict[str, list[bytes]] = {
        f"camera {camera_size[0]}x{camera_size[1]}": [
            camera_jpeg(seed, *camera_size) for seed in range(args.camera)
        ]
    }
    if args.photos:
        shared = sorted(args.photos.rglob("*.jpg"))
        sets["shared ~448 px"] = [p.read_bytes() for p in shared]
    gallery = DeviceGallery(10_000, model.embedding_dim, model.model_version)
    model.warm_up((args.batch,))
    for label, photos in sets.items():
        eligible = [p for p in photos if decoder.takes(p, spec)]
        batch = [eligible[i % len(eligible)] for i in range(args.batch)]
        lines.append(f"| {label} | GPU path takes | {len(eligible)} of {len(photos)} |")
        decode_many(batch[:8])
        row(
            label, "nvImageCodec decode alone", timed(lambda b=batch: decode_many(b), len(batch), 3)
        )
        for kind, decode_only in backends.items():
            try:
                decode_only(batch[:8])
                rate = timed(lambda b=batch, d=decode_only: d(b), len(batch), 3)  # type: ignore[misc]
                row(label, f"nvImageCodec decode alone, {kind} backend only", rate)
            except Exception as error:
                lines.append(f"| {label} | nvImageCodec decode, {kind} backend only | {error!r} |")
        with ThreadPoolExecutor(2) as two:  # two batches decoding at once: does the GPU keep up?

            def both(b: list[bytes] = batch, two: ThreadPoolExecutor = two) -> None:
                list(two.map(decode_many, [b, b]))

            row(label, "nvImageCodec decode, 2 batches at once", timed(both, 2 * len(batch), 3))

        def gpu_decode(b: list[bytes] = batch) -> None:
            pictures = decoder.decode(b, spec)
            jax.block_until_ready([p for p in pictures if p is not None and hasattr(p, "shape")])

        gpu_decode()  # compiles the resize for these buckets
        row(
            label,
            "GPU decoder (decode + crop/resize on the device)",
            timed(gpu_decode, len(batch), 3),
        )
        with ThreadPoolExecutor(args.threads) as pool:

            def cpu(b: list[bytes] = batch, pool: ThreadPoolExecutor = pool) -> None:
                list(pool.map(lambda photo: decode_photo(photo, spec, refuse_blank=True), b))

            row(label, f"CPU decoder, {args.threads} threads", timed(cpu, len(batch), 2))
        pictures = [p for p in decoder.decode(batch, spec) if p is not None and hasattr(p, "shape")]
        device_batch = jax.numpy.stack(pictures)
        model.embed(device_batch)
        row(
            label,
            "bare embed (device batch)",
            timed(lambda d=device_batch: model.embed(d), len(pictures), 3),
        )
        cpu_pictures = [decode_photo(p, spec) for p in batch[:64]]
        difference = [
            float(np.abs(np.asarray(g).astype(int) - c.astype(int)).mean())
            for g, c in zip(pictures[:64], cpu_pictures, strict=True)
        ]
        gpu_embeddings = model.embed(jax.numpy.stack(pictures[:64]))
        cpu_embeddings = model.embed(np.stack(cpu_pictures))
        cosine = (gpu_embeddings * cpu_embeddings).sum(axis=1)
        lines.append(
            f"| {label} | GPU vs CPU pictures: mean abs diff (grey levels) | "
            f"{np.mean(difference):.2f} (worst {max(difference):.2f}) |"
        )
        lines.append(
            f"| {label} | GPU vs CPU embeddings: cosine | mean {cosine.mean():.4f}, "
            f"min {cosine.min():.4f} |"
        )
        print(lines[-2], lines[-1], sep="\n", flush=True)
        for name, batch_decoder, by_reference in (
            ("GPU", decoder, False),
            ("GPU", decoder, True),
            ("CPU", None, False),
        ):
            rate, sink, stages = run_loop(
                model,
                gallery,
                eligible,
                args.batch,
                args.batches,
                args.threads,
                batch_decoder,
                by_reference,
            )
            carried = "photo files referenced" if by_reference else "photos inline"
            what = f"worker loop (pipelined), {name} decoder, {carried}, {sink.tagged} tagged"
            row(label, what, rate)
            # Each stage runs in its own thread (decode: the preparing thread, with the GPU
            # decoder's whole batch call): the largest is the loop's bound.
            spent = ", ".join(f"{stage} {ms:.2f}" for stage, ms in stages.items())
            lines.append(f"| {label} | its stages, ms a photo: {spent} | |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
