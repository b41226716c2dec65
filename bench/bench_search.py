"""Benchmark the worker's gallery search: Milvus server CPU and client CPU a query, wall a batch.

A gallery like the worker's (the loader's own rows and collection code, random unit embeddings
of dimension 1280, ten references a landmark; 300 and 5,000 references) is searched in:

- ``lite``: a Milvus Lite gRPC server (``milvus-lite server``) with OpenBLAS's default threads.
  Milvus Lite computes the distances with numpy, whose OpenBLAS starts a thread a core; those
  threads spin for a while after every call: most of this server's CPU.
- ``lite-blas1``: the same server and data, restarted with ``OPENBLAS_NUM_THREADS=1``, as
  ``deploy/local/milvus.sh`` and the tests start it now.
- ``milvus-2.3``: when PyPI's ``milvus`` package is installed, the real Milvus 2.3.5 standalone
  server it embeds (what deployments run).

The servers are started as the integration tests start them (:mod:`tests.milvus_server`).
Batches of 32 query embeddings near gallery rows are searched for their ``k`` = 10 nearest
references in several ways:

- ``worker's call``: ``MilvusClient.search`` asking for the landmark fields, hits turned into
  neighbours (:func:`worker.adapters.milvus.hits.neighbours_from_hits`), as the worker does.
- ``adapter``: :meth:`worker.adapters.milvus.MilvusReferenceIndex.search` itself (the same call,
  with the adapter's retries and checks).
- ``output``: what the search returns besides ids and distances: nothing (an empty list, which
  makes Milvus Lite send every field, vectors included), the primary key, the two landmark
  fields, every scalar field (``source`` too); the client reads ids and distances only.
- ``consistency``: Strong, Bounded (the collections' default), Eventually.
- ``no search_params`` (the server resolves the metric), ``one call per photo`` (the first 8
  queries of the batch, one call each; per query and scaled to a batch), ``ORM
  Collection.search``: each with ids and distances only.
- ``numpy exact search in this process``: for comparison, what searching a copy of the gallery
  in the worker would cost (not what the worker does).

The ways take turns, ``--per-turn`` batches each in a new random order every turn (``--turns``),
so that a change of load on a shared machine falls on all of them alike. For each way: the
server process's CPU a query (every thread's, from ``/proc/PID/task/*/schedstat``, less what the
server spends idle, measured before), this process's CPU a query (``time.process_time``:
pymilvus, gRPC and the conversion to neighbours; its own OpenBLAS is kept to one thread), and
the wall time a batch. ``same`` says whether the way found the same neighbours (reference ids,
distances to 1e-5, landmarks where it returns them) as the worker's call for the first batch. Timings
only; nothing is asserted.

    .venv/bin/python bench/bench_search.py                          # about 50 s
    .venv/bin/python bench/bench_search.py --sizes 300 --servers lite-blas1 --turns 30
    .venv/bin/python bench/bench_search.py --metric IP              # an IP gallery instead
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from pymilvus import Collection, MilvusClient, connections

# The bench's sibling modules, and tests/ (the Milvus server harness; a checkout package).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_accounting import threads_cpu_s

from schemas.gallery import (
    FIELD_EMBEDDING,
    FIELD_LANDMARK_ID,
    FIELD_LANDMARK_NAME,
    FIELD_REFERENCE_ID,
    FIELD_SOURCE,
    OUTPUT_FIELDS,
    GalleryLayout,
    Metric,
    collection_name,
    collection_properties,
    reference_id_for,
    search_params,
)
from tests.milvus_server import (
    MilvusLiteServer,
    MilvusStandaloneServer,
    milvus_standalone_missing,
)
from trainer.data.photos import Photo
from trainer.gallery.collection import (
    LONG_CALL_GRPC_OPTIONS,
    GalleryCollection,
    move_alias,
    reference_row,
)
from trainer.gallery.references import Reference
from worker.adapters.milvus import MilvusReferenceIndex
from worker.adapters.milvus.hits import distance_of, neighbours_from_hits

MODEL_VERSION = "0000000000bench1"
BATCH = 32
PER_PHOTO = 8
REFERENCES_A_LANDMARK = 10
#: Output fields for ids and distances only (an empty list makes Milvus Lite send every field).
IDS = (FIELD_REFERENCE_ID,)

#: One batch's answer, comparable across the ways: per query, (reference id, distance, landmark).
Found = list[list[tuple[str, float, str | None]]]
Search = Callable[[np.ndarray], Found]


class Measured(NamedTuple):
    server_ms: float  # server CPU ms a query, idle CPU taken off
    client_ms: float  # this process's CPU ms a query
    wall_ms: float  # wall ms a batch


@dataclass(frozen=True)
class Written:
    """A gallery as the loader leaves it in a server's data (it outlives a server restart)."""

    alias: str
    collection: str
    layout: GalleryLayout
    ids: list[str]
    vectors: np.ndarray
    load_s: float


@dataclass
class Gallery:
    """A written gallery, opened by the worker's adapter and by plain clients."""

    written: Written
    client: MilvusClient
    index: MilvusReferenceIndex
    orm: Collection
    open_s: float
    k: int

    @property
    def collection(self) -> str:
        return self.written.collection


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return np.asarray(vectors / np.linalg.norm(vectors, axis=1, keepdims=True))


def write(uri: str, size: int, dim: int, metric: Metric = "COSINE") -> Written:
    """Write a FLAT gallery of ``size`` references behind an alias of its own as the loader does
    (its rows, collection code, flush, strong count and alias move)."""
    started = time.monotonic()
    client = MilvusClient(uri=uri, timeout=600, grpc_options=LONG_CALL_GRPC_OPTIONS)
    version = f"b{size}_{uuid.uuid4().hex[:6]}"
    name = collection_name(MODEL_VERSION, version)
    layout = GalleryLayout.with_preset(dim, "FLAT", metric)
    collection = GalleryCollection(client, name, timeout_s=600.0)
    collection.open_or_create(layout, collection_properties(MODEL_VERSION, version, dim))
    vectors = unit_vectors(size, dim, seed=size)
    ids = []
    for start in range(0, size, 2000):
        rows = []
        for i in range(start, min(size, start + 2000)):
            landmark = f"landmark_{i // REFERENCES_A_LANDMARK:05d}"
            photo = Photo(Path(f"/references/{landmark}/{i}.jpg"), landmark, f"Landmark {i}")
            reference = Reference(reference_id_for(landmark, i.to_bytes(8, "big")), photo)
            rows.append(reference_row(reference, vectors[i]))
            ids.append(reference.reference_id)
        collection.insert(rows)
    collection.flush()
    if collection.row_count() != size:
        raise RuntimeError(f"{name}: row count is not {size}")
    alias = f"bench_search_{version}"
    move_alias(client, alias, name, timeout_s=60.0)
    client.close()
    return Written(alias, name, layout, ids, vectors, time.monotonic() - started)


def open_gallery(uri: str, written: Written, k: int) -> Gallery:
    """Open a written gallery: the adapter first (it loads the collection), then the others."""
    started = time.perf_counter()
    index = MilvusReferenceIndex(uri, alias=written.alias, timeout_s=600.0)
    open_s = time.perf_counter() - started
    client = MilvusClient(uri=uri, timeout=600)
    connections.connect(alias=written.alias, uri=uri)
    orm = Collection(written.collection, using=written.alias)
    return Gallery(written, client, index, orm, open_s, k)


def close(gallery: Gallery) -> None:
    gallery.index.close()
    gallery.client.close()
    connections.disconnect(gallery.written.alias)


def _raw(results: Any, metric: str) -> Found:
    """Ids and distances of every hit (what the adapter reads of an ids-only answer)."""
    return [
        [
            (str(i), distance_of(d, metric), None)
            for i, d in zip(hits.ids, hits.distances, strict=True)
        ]
        for hits in results
    ]


def ways(g: Gallery) -> dict[str, Search]:
    """Name → one batch's search, each the way it is described in the module's docstring."""
    layout = g.written.layout
    metric, params = layout.metric, search_params(layout, g.k)
    ids, vectors = g.written.ids, g.written.vectors

    def client_search(
        output: Sequence[str] = IDS, use_params: bool = True, convert: bool = False, **extra: Any
    ) -> Search:
        def run(queries: np.ndarray) -> Found:
            results = g.client.search(
                collection_name=g.collection,
                data=queries,
                limit=g.k,
                anns_field=FIELD_EMBEDDING,
                output_fields=list(output),
                search_params=params if use_params else None,
                timeout=60.0,
                **extra,
            )
            if convert:
                return _neighbours(neighbours_from_hits(list(h), metric) for h in results)
            return _raw(results, metric)

        return run

    def adapter(queries: np.ndarray) -> Found:
        return _neighbours(g.index.search(queries, g.k))

    def in_process(queries: np.ndarray) -> Found:
        similarity = queries @ vectors.T
        top = np.argpartition(-similarity, g.k - 1, axis=1)[:, : g.k]
        return [
            sorted(
                ((ids[j], distance_of(float(similarity[q, j]), metric), None) for j in row),
                key=lambda hit: (hit[1], hit[0]),
            )
            for q, row in enumerate(top)
        ]

    def per_photo(queries: np.ndarray) -> Found:
        one = client_search()  # the first PER_PHOTO queries only: one call each is slow
        return [one(queries[i : i + 1])[0] for i in range(min(PER_PHOTO, len(queries)))]

    def orm(queries: np.ndarray) -> Found:
        return _raw(
            g.orm.search(queries, FIELD_EMBEDDING, params, g.k, output_fields=list(IDS)), metric
        )

    return {
        "worker's call: landmark fields + hits→neighbours": client_search(
            OUTPUT_FIELDS, convert=True
        ),
        "adapter: MilvusReferenceIndex.search": adapter,
        "output: none (Lite sends every field)": client_search(()),
        "output: reference_id (ids, distances)": client_search(),
        "output: landmark_id, landmark_name": client_search(
            (FIELD_LANDMARK_ID, FIELD_LANDMARK_NAME)
        ),
        "output: all scalars (+ source)": client_search(
            (FIELD_LANDMARK_ID, FIELD_LANDMARK_NAME, FIELD_SOURCE)
        ),
        **{
            f"consistency {level}, ids only": client_search(consistency_level=level)
            for level in ("Strong", "Bounded", "Eventually")
        },
        "no search_params, ids only": client_search(use_params=False),
        f"one call per photo, ids only ({PER_PHOTO} of the batch)": per_photo,
        "ORM Collection.search, ids only": orm,
        "numpy exact search in this process (not used)": in_process,
    }


def _neighbours(found: Any) -> Found:
    return [[(n.reference_id, n.distance, n.landmark_id) for n in hits] for hits in found]


def same(found: Found, reference: Found) -> bool:
    """Same reference ids in the same order, distances within 1e-5, landmarks where given (for
    the queries searched)."""
    for hits, expected in zip(found, reference[: len(found)], strict=True):
        if [h[0] for h in hits] != [e[0] for e in expected]:
            return False
        for (_, distance, landmark), (_, want_distance, want_landmark) in zip(
            hits, expected, strict=True
        ):
            if abs(distance - want_distance) > 1e-5 or landmark not in (None, want_landmark):
                return False
    return True


def idle_cpu_rate(pid: int, seconds: float) -> float:
    """CPU seconds a second the server spends with nothing asked of it: the median of 0.1 s
    windows (a freshly started Milvus 2.3 has bursts of work of its own)."""
    rates = []
    for _ in range(max(1, round(seconds / 0.1))):
        before, started = threads_cpu_s(pid), time.perf_counter()
        time.sleep(0.1)
        rates.append(max(0.0, threads_cpu_s(pid) - before) / (time.perf_counter() - started))
    return float(np.median(rates))


class Totals:
    """What the batches of one way have cost so far."""

    def __init__(self) -> None:
        self.server = self.client = self.wall = 0.0
        self.batches = self.queries = 0

    def result(self, idle: float) -> Measured:
        server = max(0.0, self.server - idle * self.wall)
        return Measured(
            1e3 * server / self.queries,
            1e3 * self.client / self.queries,
            1e3 * self.wall * BATCH / self.queries,  # a way that searches part of a batch: scaled
        )


def measure(
    chosen: dict[str, Search],
    batches: Sequence[np.ndarray],
    pid: int,
    idle: float,
    turns: int,
    per_turn: int,
) -> dict[str, Measured]:
    """Interleave the ways, ``per_turn`` batches at a time in a new random order each turn, so
    that a change of load on a shared machine falls on all of them alike."""
    totals = {name: Totals() for name in chosen}
    order = list(chosen)
    shuffle = np.random.default_rng(11)
    for turn in range(turns):
        shuffle.shuffle(order)
        gc.collect()  # not in the middle of some way's batch
        for name in order:
            search, sums = chosen[name], totals[name]
            for i in range(per_turn):
                batch = batches[(turn * per_turn + i) % len(batches)]
                server = threads_cpu_s(pid)
                client, started = time.process_time(), time.perf_counter()
                found = search(batch)
                wall, client = time.perf_counter() - started, time.process_time() - client
                sums.server += max(0.0, threads_cpu_s(pid) - server)
                sums.client += client
                sums.wall += wall
                sums.batches += 1
                sums.queries += len(found)
    return {name: sums.result(idle) for name, sums in totals.items()}


def bench_gallery(
    server_name: str, uri: str, pid: int, written: Written, args: argparse.Namespace
) -> list[str]:
    size = len(written.ids)
    rng = np.random.default_rng(7)
    batches = []
    for _ in range(8):  # queries near gallery rows, as photos of its landmarks would be
        rows = written.vectors[rng.integers(0, size, BATCH)]
        rows = rows + 0.05 * unit_vectors(BATCH, args.dim, 3)
        batches.append((rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32))
    gallery = open_gallery(uri, written, args.k)
    try:
        chosen = ways(gallery)
        reference = chosen["worker's call: landmark fields + hits→neighbours"](batches[0])
        agrees = {name: same(search(batches[0]), reference) for name, search in chosen.items()}
        time.sleep(0.3)  # the server's work after loading the collection ends
        idle = idle_cpu_rate(pid, args.idle_seconds)
        measured = measure(chosen, batches, pid, idle, args.turns, args.per_turn)
    finally:
        close(gallery)
    print(
        f"\n{server_name}, {size} references: written in {written.load_s:.1f} s, opened by the "
        f"adapter (landmark map included) in {gallery.open_s:.2f} s; server idle "
        f"{1e3 * idle:.1f} ms CPU/s",
        flush=True,
    )
    lines = []
    for name, m in measured.items():
        lines.append(
            f"| {server_name} | {size} | {name} | {m.server_ms:.2f} | {m.client_ms:.2f} "
            f"| {m.server_ms + m.client_ms:.2f} | {m.wall_ms:.1f} "
            f"| {'yes' if agrees[name] else 'NO'} |"
        )
        print(lines[-1], flush=True)
    return lines


#: Milvus Lite as ``deploy/local/milvus.sh`` starts it, and with one OpenBLAS thread.
SERVER_ENV: dict[str, dict[str, str]] = {
    "lite": {},
    "lite-blas1": {"OPENBLAS_NUM_THREADS": "1"},
}

HEADER = [
    "| server | references | way | server CPU ms/query | client CPU ms/query | total | "
    "wall ms/batch | same |",
    "| --- | ---: | --- | ---: | ---: | ---: | ---: | --- |",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sizes", default="300,5000", help="gallery sizes (references)")
    parser.add_argument(
        "--servers",
        default="lite,lite-blas1,milvus-2.3",
        help="lite, lite-blas1 (OPENBLAS_NUM_THREADS=1), milvus-2.3",
    )
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument(
        "--metric",
        default="COSINE",
        choices=("COSINE", "IP"),
        help="the gallery's metric (the loader's is COSINE; IP gives the same neighbours of unit "
        "embeddings without recomputing the references' norms in every search)",
    )
    parser.add_argument("--turns", type=int, default=4, help="turns of every way")
    parser.add_argument("--per-turn", type=int, default=2, help="batches a way a turn")
    parser.add_argument("--idle-seconds", type=float, default=0.5)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with contextlib.suppress(ImportError):  # scikit-learn's dependency, in the dev extra
        from threadpoolctl import threadpool_limits

        # OpenBLAS's threads spin for a while after each call: in this process they would
        # charge the numpy way's matrix product to whichever way runs next.
        threadpool_limits(1, user_api="blas")
    sizes = [int(s) for s in args.sizes.split(",") if s]
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    lines = []
    written: dict[Path, list[Written]] = {}  # the Lite servers share their data
    with tempfile.TemporaryDirectory(prefix="bench-search-") as work:
        for server_name in servers:
            if server_name == "milvus-2.3" and (missing := milvus_standalone_missing()):
                print(f"\nmilvus-2.3 left out: {missing}")
                continue
            server: MilvusLiteServer | MilvusStandaloneServer
            if server_name == "milvus-2.3":
                data = Path(work) / server_name
                server = MilvusStandaloneServer(data)
            else:
                data = Path(work) / "lite"
                server = MilvusLiteServer(data, env=SERVER_ENV[server_name])
            with server:
                assert server.pid is not None
                if data not in written:
                    written[data] = [write(server.uri, n, args.dim, args.metric) for n in sizes]
                for gallery in written[data]:
                    lines += bench_gallery(server_name, server.uri, server.pid, gallery, args)
    print(
        f"\nbatches of {BATCH} queries, k={args.k}, dimension {args.dim}; {args.turns} turns of "
        f"{args.per_turn} batches a way, the ways interleaved\n"
    )
    print("\n".join(HEADER + lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
