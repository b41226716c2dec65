"""GPU check (JAX backend): embed-stage images/s and decode images/s on one machine.

Run on a machine with JAX and a GPU but no TensorFlow::

    KERAS_BACKEND=jax python bench/gpu/gpu_embed.py --cache-dir .gpu/cache --export .gpu/model

Prints a table: MobileNetV2 embedding throughput (fp32 and mixed bf16, batch 64/256, 224 px,
host→device transfer included), the worker's own embedder on an export, and the throughput of
the shared decode function (schemas.preprocessing.decode_photo) on camera-size JPEGs over all
CPU cores, with and without reduced-size decoding — the bound a GPU worker hits.
"""

from __future__ import annotations

import argparse
import io
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np


def _embed_rate(model, batch: int, size: int, repeats: int) -> float:
    x = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3)).astype(np.float32)
    for _ in range(3):
        np.asarray(model.predict_on_batch(x))
    start = time.perf_counter()
    for _ in range(repeats):
        np.asarray(model.predict_on_batch(x))
    return batch * repeats / (time.perf_counter() - start)


def _mobilenet(cache: Path, policy: str):
    import keras

    from trainer.backbones import build_stages

    keras.mixed_precision.set_global_policy(policy)
    stages = build_stages("mobilenet_v2", "imagenet", 224, cache_dir=cache, allow_download=False)
    model = keras.Sequential(
        [
            keras.Input((224, 224, 3)),
            *stages,
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.UnitNormalization(dtype="float32"),
        ]
    )
    return model


def camera_jpeg(seed: int, width: int = 4000, height: int = 3000) -> bytes:
    """A camera-size JPEG (smooth gradient plus 8x8-block noise, about 1.4 MB at 12 MP)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    base = base * np.ones((height, 1, 3), np.float32)
    noise = rng.normal(0, 25, (height // 8, width // 8, 3)).repeat(8, 0).repeat(8, 1)
    out = io.BytesIO()
    Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(out, "JPEG", quality=90)
    return out.getvalue()


def _decode_many(args: tuple[list[bytes], int, bool]) -> int:
    from schemas import preprocessing
    from schemas.preprocessing import PreprocessingSpec, decode_photo

    photos, rounds, draft = args
    if not draft:
        preprocessing.DRAFT_SIDE_FACTOR = 10**6  # reduced-size decoding never applies
    spec = PreprocessingSpec(input_size=224)
    for _ in range(rounds):
        for data in photos:
            decode_photo(data, spec)
    return rounds * len(photos)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-dir", type=Path, default=Path(".gpu/cache"))
    parser.add_argument("--export", type=Path, default=Path(".gpu/model"))
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    import jax

    rows = [("device", str(jax.devices()[0]), "")]
    for policy in ("float32", "mixed_bfloat16"):
        model = _mobilenet(args.cache_dir, policy)
        for batch in (64, 256):
            rate = _embed_rate(model, batch, 224, args.repeats)
            rows.append((f"MobileNetV2 224px {policy}", f"batch {batch}", f"{rate:,.0f} img/s"))
    import keras

    keras.mixed_precision.set_global_policy("float32")
    if args.export.is_dir():
        from worker.adapters.keras_embedder import KerasEmbedder

        embedder = KerasEmbedder.from_export(args.export)
        size = embedder.input_size if hasattr(embedder, "input_size") else 160
        for batch in (32, 256):
            x = np.random.default_rng(1).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
            for _ in range(3):
                embedder.embed(x)
            start = time.perf_counter()
            for _ in range(args.repeats):
                embedder.embed(x)
            rate = batch * args.repeats / (time.perf_counter() - start)
            rows.append(
                (f"worker KerasEmbedder {size}px fp32", f"batch {batch}", f"{rate:,.0f} img/s")
            )
    photos = [camera_jpeg(s) for s in range(4)]
    size_mb = np.mean([len(p) for p in photos]) / 1e6
    cores = os.cpu_count() or 1
    for draft in (False, True):
        with ProcessPoolExecutor(cores) as pool:
            list(pool.map(_decode_many, [(photos, 1, draft)] * cores))
            start = time.perf_counter()
            done = sum(pool.map(_decode_many, [(photos, 3, draft)] * cores))
            rate = done / (time.perf_counter() - start)
        label = "reduced-size (draft)" if draft else "full decode"
        rows.append(
            (
                f"decode 12MP JPEG {size_mb:.1f} MB, {label}",
                f"{cores} processes",
                f"{rate:,.0f} img/s",
            )
        )
    print("\n| what | setting | throughput |\n| --- | --- | --- |")
    for row in rows:
        print(f"| {row[0]} | {row[1]} | {row[2]} |")


if __name__ == "__main__":
    main()
