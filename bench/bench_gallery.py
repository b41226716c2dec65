"""Benchmark the reference gallery in Milvus Lite: load rate, batched search latency, recall.

Random unit vectors (dimension 512 by default) go into a gallery collection through the
gallery loader's own collection code (:class:`trainer.gallery.collection.GalleryCollection`), and
are searched through the worker's adapter (:class:`worker.adapters.milvus.MilvusReferenceIndex`),
so the figures are those the product sees. For every gallery size and index type it prints the
latency of one search call per batch of ``nq`` queries, recall@k against exact numpy search,
and numpy brute-force latency for the same batch. Timings only; nothing is asserted.

    .venv/bin/python bench/bench_gallery.py            # 1k, 10k, 100k; nq 1, 16, 64, 256
    .venv/bin/python bench/bench_gallery.py --quick    # 1k and 5k; nq 1, 16, 64
    .venv/bin/python bench/bench_gallery.py --uri http://127.0.0.1:19530   # a running server
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from pymilvus import MilvusClient

from schemas.gallery import (
    FIELD_EMBEDDING,
    GalleryLayout,
    collection_name,
    collection_properties,
)
from trainer.gallery.collection import LONG_CALL_GRPC_OPTIONS, GalleryCollection, move_alias
from worker.adapters.milvus import MilvusReferenceIndex

MODEL_VERSION = "0000000000bench0"


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def exact_top_k(gallery: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k most similar gallery rows for each query (numpy brute force)."""
    similarity = queries @ gallery.T
    top = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(similarity, top, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(top, order, axis=1)


def median_seconds(call: Callable[[], object], repeats: int) -> float:
    call()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def load_collection(
    client: MilvusClient, name: str, vectors: np.ndarray, insert_batch: int
) -> float:
    """Create a FLAT gallery, insert ``vectors`` and flush; returns rows per second."""
    if client.has_collection(name):
        client.drop_collection(name)
    dim = vectors.shape[1]
    collection = GalleryCollection(client, name, timeout_s=600.0, index_timeout_s=7200.0)
    collection.open_or_create(
        GalleryLayout.with_preset(dim, "FLAT"), collection_properties(MODEL_VERSION, name, dim)
    )
    started = time.perf_counter()
    for start in range(0, len(vectors), insert_batch):
        rows = [
            {
                "reference_id": f"{i:032x}",
                "landmark_id": f"landmark-{i % 1000}",
                "landmark_name": f"Landmark {i % 1000}",
                "embedding": vectors[i],
                "source": f"bench/{i}.jpg",
            }
            for i in range(start, min(len(vectors), start + insert_batch))
        ]
        collection.insert(rows)
    collection.flush()
    seconds = time.perf_counter() - started
    if collection.row_count() != len(vectors):
        raise RuntimeError(f"{name}: row count does not match {len(vectors)}")
    return len(vectors) / seconds


def switch_index(client: MilvusClient, name: str, layout: GalleryLayout) -> float:
    """Replace the collection's vector index; returns seconds to build and load it."""
    started = time.perf_counter()
    client.release_collection(name)
    for index_name in client.list_indexes(name, field_name=FIELD_EMBEDDING):
        client.drop_index(name, index_name)
    params = client.prepare_index_params()
    params.add_index(FIELD_EMBEDDING, index_name=FIELD_EMBEDDING, **layout.index_spec())
    client.create_index(name, params, timeout=7200)
    client.load_collection(name, timeout=7200)
    return time.perf_counter() - started


def run(args: argparse.Namespace) -> None:
    queries_all = unit_vectors(max(args.nq), args.dim, seed=1)
    owned_dir = None
    uri = args.uri
    if uri is None:
        owned_dir = tempfile.TemporaryDirectory(prefix="bench-gallery-")
        uri = str(Path(owned_dir.name) / "milvus.db")
    client = MilvusClient(uri=uri, timeout=600, grpc_options=LONG_CALL_GRPC_OPTIONS)
    load_lines = []
    search_lines = []
    header = (
        f"{'gallery':>8} {'index':>8} {'nq':>5} {'milvus ms/batch':>16} {'ms/query':>9} "
        f"{'recall@' + str(args.k):>9} {'numpy ms/batch':>15}"
    )
    print(f"uri={uri} dim={args.dim} k={args.k} repeats={args.repeats}", flush=True)
    for size in args.sizes:
        gallery = unit_vectors(size, args.dim, seed=0)
        name = collection_name(MODEL_VERSION, f"bench{size}")
        rows_per_s = load_collection(client, name, gallery, args.insert_batch)
        build_lines = [f"{size:>8} {rows_per_s:>12.0f} rows/s insert"]
        move_alias(client, f"bench_{size}", name, timeout_s=60.0)
        for index_type in args.indexes:
            layout = GalleryLayout.with_preset(args.dim, index_type)
            build_s = switch_index(client, name, layout)
            build_lines.append(f"{index_type} index build+load {build_s:.1f} s")
            index = MilvusReferenceIndex(uri, alias=f"bench_{size}", timeout_s=600.0)
            for nq in args.nq:
                queries = queries_all[:nq]
                truth = exact_top_k(gallery, queries, args.k)
                found = index.search(queries, args.k)
                recall = np.mean(
                    [
                        len({int(n.reference_id, 16) for n in hits} & set(row.tolist())) / args.k
                        for hits, row in zip(found, truth, strict=True)
                    ]
                )
                milvus_s = median_seconds(
                    lambda q=queries, i=index: i.search(q, args.k), args.repeats
                )
                numpy_s = median_seconds(
                    lambda q=queries, g=gallery: exact_top_k(g, q, args.k), args.repeats
                )
                line = (
                    f"{size:>8} {index_type:>8} {nq:>5} {milvus_s * 1e3:>16.1f} "
                    f"{milvus_s * 1e3 / nq:>9.2f} {recall:>9.3f} {numpy_s * 1e3:>15.2f}"
                )
                search_lines.append(line)
                print(line, flush=True)
            index.close()
        load_lines.append(", ".join(build_lines))
        client.drop_alias(f"bench_{size}")
        client.drop_collection(name)
    client.close()
    print("\nload (FLAT collection, MilvusClient.insert of", args.insert_batch, "rows a call)")
    for line in load_lines:
        print("  " + line)
    print("\nsearch (one call per batch; median of", args.repeats, "after a warm-up)")
    print(header)
    for line in search_lines:
        print(line)
    if owned_dir is not None:
        owned_dir.cleanup()


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1k and 5k galleries, nq up to 64")
    parser.add_argument("--sizes", type=_ints, default=None, help="gallery sizes, e.g. 1000,10000")
    parser.add_argument("--nq", type=_ints, default=None, help="batch sizes, e.g. 1,16,64,256")
    parser.add_argument("--indexes", default="FLAT,HNSW", help="index types (FLAT,HNSW,IVF_FLAT)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--insert-batch", type=int, default=2000)
    parser.add_argument(
        "--uri",
        default=os.environ.get("LANDMARK_BENCH_MILVUS_URI"),
        help="Milvus URI (default: a Milvus Lite file in a temporary folder) "
        "[env: LANDMARK_BENCH_MILVUS_URI]",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.sizes is None:
        args.sizes = [1000, 5000] if args.quick else [1000, 10_000, 100_000]
    if args.nq is None:
        args.nq = [1, 16, 64] if args.quick else [1, 16, 64, 256]
    args.indexes = [part.strip().upper() for part in args.indexes.split(",") if part.strip()]
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
