"""The reference gallery against Milvus Lite (as a file and through its gRPC server) and real Milvus.

A real export (MobileNetV2 with ImageNet weights at 96 px, to keep the tests quick on a CPU)
embeds a subset of the shared landmark photos; the gallery loader's command and functions load
them into Milvus; the worker's :class:`MilvusReferenceIndex` searches them.

The tests that between them make each Milvus call of the loader and the worker's index
(creating a collection with its schema, properties and index; inserting, flushing, releasing
and loading; counting and iterating; creating and moving the alias; describing; searching with
each index's parameters; dropping) run twice: on a Milvus Lite file (``[lite]``) and on the real
Milvus standalone server, 2.3.5, that PyPI's ``milvus`` package embeds (``[milvus-2.3]``; one
server for the session, on which each test has an alias of its own and drops the collections it
made). So does the command, once. The worker process switching galleries on real Milvus is in
``test_worker_versions.py``.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from pymilvus import MilvusClient

from schemas.gallery import FIELD_REFERENCE_ID, collection_properties
from schemas.manifest import ModelManifest
from tests.milvus_server import (
    MilvusLiteServer,
    MilvusStandaloneServer,
    collections_dropped_after,
)
from trainer.cli.gallery import main as load_gallery_command
from trainer.data.loading import load_photos
from trainer.data.photos import Photo, read_landmark_folders
from trainer.gallery.loader import (
    GalleryLoadError,
    GalleryLoadSettings,
    LoadProgress,
    load_gallery,
    plan_references,
)
from worker.adapters.milvus import (
    GalleryMismatchError,
    GalleryUnavailableError,
    MilvusReferenceIndex,
)

pytestmark = pytest.mark.integration

LANDMARKS = (
    "charminar",
    "gateway_of_india",
    "golden_temple",
    "hawa_mahal",
    "india_gate",
    "tajmahal",
)
GALLERY_PER_LANDMARK = 8
QUERIES_PER_LANDMARK = 5
INPUT_SIZE = 96


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real export: MobileNetV2 (ImageNet weights) pooled features, unit-normalised."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from trainer.model.embedding import EmbeddingModelConfig, assemble, build_embedding_model
    from trainer.model.export import export_model

    parts = build_embedding_model(EmbeddingModelConfig("mobilenet_v2", INPUT_SIZE), "imagenet")
    out = tmp_path_factory.mktemp("export")
    export_model(assemble(parts), backbone="mobilenet_v2", out_dir=out)
    return out


@pytest.fixture(scope="module")
def exported(export_dir: Path) -> tuple[object, ModelManifest]:
    from trainer.model.export import load_export

    return load_export(export_dir)


@pytest.fixture(scope="module")
def landmark_photos(landmarks_dir: Path) -> dict[str, list[Photo]]:
    photos = read_landmark_folders(landmarks_dir)
    by_landmark: dict[str, list[Photo]] = {name: [] for name in LANDMARKS}
    for photo in photos:
        if photo.landmark_id in by_landmark:
            by_landmark[photo.landmark_id].append(photo)
    return by_landmark


@pytest.fixture(scope="module")
def gallery_photos(landmark_photos: dict[str, list[Photo]]) -> list[Photo]:
    return [p for name in LANDMARKS for p in landmark_photos[name][:GALLERY_PER_LANDMARK]]


@pytest.fixture(scope="module")
def query_photos(landmark_photos: dict[str, list[Photo]]) -> list[Photo]:
    end = GALLERY_PER_LANDMARK + QUERIES_PER_LANDMARK
    return [p for name in LANDMARKS for p in landmark_photos[name][GALLERY_PER_LANDMARK:end]]


#: Where the tests of each Milvus call run: Milvus Lite, and the real Milvus 2.3 server.
BACKENDS = ("lite", "milvus-2.3")


@dataclass(frozen=True)
class Target:
    """The Milvus a test loads its galleries into, and the alias it moves there."""

    uri: str
    alias: str = "landmarks"

    def settings(self, **changes: object) -> GalleryLoadSettings:
        return GalleryLoadSettings(uri=self.uri, alias=self.alias, **changes)  # type: ignore[arg-type]

    def index(self, **options: object) -> MilvusReferenceIndex:
        return MilvusReferenceIndex(self.uri, alias=self.alias, **options)  # type: ignore[arg-type]


@pytest.fixture
def lite_uri(tmp_path: Path) -> str:
    return str(tmp_path / "milvus.db")


def _on_shared_server(server: MilvusStandaloneServer) -> Iterator[Target]:
    """The session's real Milvus server, with an alias of the test's own; its collections are
    dropped afterwards."""
    with collections_dropped_after(server.uri):
        yield Target(server.uri, f"gallery_{uuid.uuid4().hex[:12]}")


@pytest.fixture(params=BACKENDS)
def milvus(request: pytest.FixtureRequest, lite_uri: str) -> Iterator[Target]:
    """A Milvus Lite file, or the session's real Milvus 2.3 server."""
    if request.param == "lite":
        yield Target(lite_uri)
    else:
        yield from _on_shared_server(request.getfixturevalue("milvus_standalone"))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[MilvusLiteServer]:
    with MilvusLiteServer(tmp_path / "milvus-server-data") as running:
        yield running


def link_references(photos: list[Photo], data: Path) -> Path:
    """A folder of landmark folders of links to ``photos``, for the command's ``--data``."""
    for photo in photos:
        folder = data / photo.landmark_id
        folder.mkdir(parents=True, exist_ok=True)
        (folder / photo.path.name).symlink_to(photo.path)
    return data


def run_command(export_dir: Path, data: Path, uri: str, *extra: str) -> None:
    argv = ["--model-dir", str(export_dir), "--data", str(data), "--milvus-uri", uri, *extra]
    assert load_gallery_command(argv) == 0


def references_behind_alias(uri: str, alias: str = "landmarks") -> list[str]:
    client = MilvusClient(uri=uri)
    try:
        collection = client.describe_alias(alias)["collection_name"]
        client.load_collection(collection)
        rows = client.query(
            collection,
            filter="",
            output_fields=[FIELD_REFERENCE_ID],
            limit=16384,
            consistency_level="Strong",  # real Milvus's default (Bounded) may miss fresh rows
        )
        return [row[FIELD_REFERENCE_ID] for row in rows]
    finally:
        client.close()


def alias_target(uri: str, alias: str = "landmarks") -> str:
    client = MilvusClient(uri=uri)
    try:
        return str(client.describe_alias(alias)["collection_name"])
    finally:
        client.close()


def expected_ids(photos: list[Photo]) -> set[str]:
    return {reference.reference_id for reference in plan_references(photos).references}


def embed(exported: tuple[object, ModelManifest], photos: list[Photo]) -> np.ndarray:
    model, manifest = exported
    loaded = load_photos([p.path for p in photos], manifest.preprocessing)
    assert not loaded.failures
    return np.asarray(model.predict_on_batch(loaded.images.astype(np.float32)))  # type: ignore[attr-defined]


# --- the command, Milvus Lite as a file -------------------------------------------------


@dataclass(frozen=True)
class GalleryState:
    """What is behind the alias after one run of the command."""

    collection: str
    reference_ids: list[str]
    collections: list[str]


@pytest.fixture(scope="module")
def command_runs(
    export_dir: Path, gallery_photos: list[Photo], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, GalleryState]:
    """The command run three times on one Milvus Lite file: load, re-run, new gallery version.

    (Each run loads the export afresh, which is what makes the command slow; the three runs
    are shared by the tests below, each of which checks one behaviour.)
    """
    root = tmp_path_factory.mktemp("command")
    data = link_references(gallery_photos, root / "references")
    uri = str(root / "milvus.db")
    states = {}
    for run, extra in (("first", ()), ("rerun", ()), ("new_version", ("--gallery-version", "v2"))):
        run_command(export_dir, data, uri, *extra)
        client = MilvusClient(uri=uri)
        states[run] = GalleryState(
            alias_target(uri), references_behind_alias(uri), sorted(client.list_collections())
        )
        client.close()
    return states


def test_command_puts_each_reference_once_behind_the_alias(
    command_runs: dict[str, GalleryState], gallery_photos: list[Photo]
) -> None:
    ids = command_runs["first"].reference_ids

    assert sorted(ids) == sorted(expected_ids(gallery_photos))


def test_rerunning_the_command_adds_no_duplicates(
    command_runs: dict[str, GalleryState], gallery_photos: list[Photo]
) -> None:
    first, rerun = command_runs["first"], command_runs["rerun"]

    assert rerun.collection == first.collection
    assert rerun.collections == first.collections
    assert sorted(rerun.reference_ids) == sorted(expected_ids(gallery_photos))


def test_new_gallery_version_moves_the_alias_and_keeps_one_copy(
    command_runs: dict[str, GalleryState], gallery_photos: list[Photo]
) -> None:
    first, new = command_runs["first"], command_runs["new_version"]

    assert new.collection.endswith("_v2")
    assert sorted(new.reference_ids) == sorted(expected_ids(gallery_photos))
    assert first.collection in new.collections  # the previous one is kept by default


def test_command_loads_the_gallery_into_a_real_milvus_server(
    export_dir: Path,
    gallery_photos: list[Photo],
    milvus_standalone: MilvusStandaloneServer,
    tmp_path: Path,
) -> None:
    """The command's own connection (URI, empty token, keepalive) to real Milvus, once."""
    data = link_references(gallery_photos, tmp_path / "references")
    alias = f"gallery_{uuid.uuid4().hex[:12]}"

    with collections_dropped_after(milvus_standalone.uri):
        run_command(export_dir, data, milvus_standalone.uri, "--alias", alias)

        ids = references_behind_alias(milvus_standalone.uri, alias)
    assert sorted(ids) == sorted(expected_ids(gallery_photos))


def test_drop_previous_removes_the_collection_the_alias_left(
    exported: tuple[object, ModelManifest], gallery_photos: list[Photo], milvus: Target
) -> None:
    model, manifest = exported
    client = MilvusClient(uri=milvus.uri)
    before = set(client.list_collections())
    for version in ("v1", "v2"):
        settings = milvus.settings(gallery_version=version, keep_previous=False)
        report = load_gallery(client, model, manifest, gallery_photos[:3], settings)  # type: ignore[arg-type]

    names = [name for name in client.list_collections() if name not in before]
    assert names == [alias_target(milvus.uri, milvus.alias)] == [report.collection]
    assert report.previous_dropped


def test_bad_photos_are_reported_and_skipped(
    exported: tuple[object, ModelManifest],
    gallery_photos: list[Photo],
    tmp_path: Path,
    lite_uri: str,
) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"this is not a photo at all")
    photos = [*gallery_photos[:4], Photo(broken, "charminar", "Charminar")]
    model, manifest = exported
    client = MilvusClient(uri=lite_uri)

    report = load_gallery(client, model, manifest, photos, GalleryLoadSettings(uri=lite_uri))  # type: ignore[arg-type]

    assert [bad.path for bad in report.bad_photos] == [broken]
    assert report.row_count == 4


# --- resuming an interrupted load --------------------------------------------------------


def test_interrupted_load_resumes_and_moves_the_alias_only_when_complete(
    exported: tuple[object, ModelManifest], gallery_photos: list[Photo], milvus: Target
) -> None:
    model, manifest = exported
    settings = milvus.settings(gallery_version="v1", embed_batch_size=8, insert_batch_size=8)
    client = MilvusClient(uri=milvus.uri)

    def interrupt(progress: LoadProgress) -> None:
        if progress.inserted:
            raise KeyboardInterrupt  # as Ctrl-C would, right after the first insert

    with pytest.raises(KeyboardInterrupt):
        load_gallery(client, model, manifest, gallery_photos, settings, progress=interrupt)  # type: ignore[arg-type]
    assert milvus.alias not in client.list_aliases().get("aliases", [])

    report = load_gallery(client, model, manifest, gallery_photos, settings)  # type: ignore[arg-type]

    assert report.already_present == 8
    assert report.inserted == len(gallery_photos) - 8
    assert sorted(references_behind_alias(milvus.uri, milvus.alias)) == sorted(
        expected_ids(gallery_photos)
    )


def test_loader_refuses_to_resume_into_a_collection_of_another_model(
    exported: tuple[object, ModelManifest], gallery_photos: list[Photo], milvus: Target
) -> None:
    model, manifest = exported
    settings = milvus.settings(gallery_version="v1")
    client = MilvusClient(uri=milvus.uri)
    load_gallery(client, model, manifest, gallery_photos[:2], settings)  # type: ignore[arg-type]
    name = alias_target(milvus.uri, milvus.alias)
    client.alter_collection_properties(name, collection_properties("0" * 16, "v1", 7))

    with pytest.raises(GalleryLoadError, match="model_version"):
        load_gallery(client, model, manifest, gallery_photos[:2], settings)  # type: ignore[arg-type]


# --- searching through the worker's adapter ---------------------------------------------


def test_search_returns_each_gallery_photo_and_its_landmark_first(
    exported: tuple[object, ModelManifest], gallery_photos: list[Photo], milvus: Target
) -> None:
    model, manifest = exported
    load_gallery(
        MilvusClient(uri=milvus.uri),
        model,
        manifest,
        gallery_photos,
        milvus.settings(),
    )  # type: ignore[arg-type]
    index = milvus.index()
    index.check_compatible(manifest.model_version, manifest.embedding_dim)
    ids = [r.reference_id for r in plan_references(gallery_photos).references]

    results = index.search(embed(exported, gallery_photos), k=5)

    assert [hits[0].reference_id for hits in results] == ids
    assert [hits[0].landmark_id for hits in results] == [p.landmark_id for p in gallery_photos]
    assert all(hits[0].distance < 1e-3 for hits in results)
    assert all(len(hits) == 5 for hits in results)
    assert all([h.distance for h in hits] == sorted(h.distance for h in hits) for hits in results)


def test_ip_cosine_and_l2_galleries_find_the_same_neighbours(
    exported: tuple[object, ModelManifest],
    gallery_photos: list[Photo],
    query_photos: list[Photo],
    milvus: Target,
) -> None:
    """The loader's IP gallery (its default) ranks and measures as a COSINE or L2 one does."""
    model, manifest = exported
    client = MilvusClient(uri=milvus.uri)
    queries = embed(exported, query_photos)
    found = {}
    for metric in ("COSINE", "L2", "IP"):
        settings = milvus.settings(gallery_version=f"v-{metric.lower()}", metric=metric)
        load_gallery(client, model, manifest, gallery_photos, settings)  # type: ignore[arg-type]
        index = milvus.index()
        assert index.describe().layout.metric == metric
        found[metric] = index.search(queries, k=5)
        index.close()

    for metric in ("COSINE", "L2"):
        for ours, theirs in zip(found["IP"], found[metric], strict=True):
            assert [h.reference_id for h in ours] == [h.reference_id for h in theirs]
            np.testing.assert_allclose(
                [h.distance for h in ours], [h.distance for h in theirs], atol=1e-5
            )


@pytest.mark.parametrize("index_type", ["HNSW", "IVF_FLAT"])
def test_approximate_index_finds_each_gallery_photo_first(
    exported: tuple[object, ModelManifest],
    gallery_photos: list[Photo],
    milvus: Target,
    index_type: str,
) -> None:
    model, manifest = exported
    settings = milvus.settings(index_type=index_type)
    loader = MilvusClient(uri=milvus.uri)
    load_gallery(loader, model, manifest, gallery_photos, settings)  # type: ignore[arg-type]
    # Closed before searching: once (CI, 2026-11-27) the index files of this Milvus Lite .db were
    # read by the search while the loader's client still had them open for writing
    # ("read error ... Resource temporarily unavailable").
    loader.close()
    index = milvus.index()

    results = index.search(embed(exported, gallery_photos), k=3)

    assert index.describe().layout.index_type == index_type
    assert [hits[0].landmark_id for hits in results] == [p.landmark_id for p in gallery_photos]


def test_search_finds_the_landmark_of_photos_not_in_the_gallery(
    exported: tuple[object, ModelManifest],
    gallery_photos: list[Photo],
    query_photos: list[Photo],
    lite_uri: str,
) -> None:
    """With ImageNet features, the nearest reference usually shows the same landmark."""
    model, manifest = exported
    load_gallery(
        MilvusClient(uri=lite_uri),
        model,
        manifest,
        gallery_photos,
        GalleryLoadSettings(uri=lite_uri),
    )  # type: ignore[arg-type]
    index = MilvusReferenceIndex(lite_uri)

    results = index.search(embed(exported, query_photos), k=1)

    right = sum(
        hits[0].landmark_id == q.landmark_id for hits, q in zip(results, query_photos, strict=True)
    )
    assert right / len(query_photos) >= 0.5  # chance is 1/6


def test_adapter_refuses_a_gallery_of_another_model_version(
    exported: tuple[object, ModelManifest], gallery_photos: list[Photo], lite_uri: str
) -> None:
    model, manifest = exported
    load_gallery(
        MilvusClient(uri=lite_uri),
        model,
        manifest,
        gallery_photos[:2],
        GalleryLoadSettings(uri=lite_uri),
    )  # type: ignore[arg-type]
    index = MilvusReferenceIndex(lite_uri)

    with pytest.raises(GalleryMismatchError, match="model"):
        index.check_compatible("f" * 16, manifest.embedding_dim)


def test_adapter_refuses_a_gallery_of_another_dimension(
    exported: tuple[object, ModelManifest], gallery_photos: list[Photo], lite_uri: str
) -> None:
    model, manifest = exported
    load_gallery(
        MilvusClient(uri=lite_uri),
        model,
        manifest,
        gallery_photos[:2],
        GalleryLoadSettings(uri=lite_uri),
    )  # type: ignore[arg-type]
    index = MilvusReferenceIndex(lite_uri)

    with pytest.raises(GalleryMismatchError, match="dimensional"):
        index.check_compatible(manifest.model_version, 128)


def test_refresh_switches_to_the_collection_the_alias_moved_to(
    exported: tuple[object, ModelManifest], gallery_photos: list[Photo], lite_uri: str
) -> None:
    """(A worker process does this on real Milvus too, in test_worker_versions.py.)"""
    model, manifest = exported
    client = MilvusClient(uri=lite_uri)
    load_gallery(
        client,
        model,
        manifest,
        gallery_photos[:3],
        GalleryLoadSettings(uri=lite_uri, gallery_version="v1"),
    )  # type: ignore[arg-type]
    index = MilvusReferenceIndex(lite_uri)
    index.check_compatible(manifest.model_version, manifest.embedding_dim)
    assert index.refresh() is False
    load_gallery(
        client,
        model,
        manifest,
        gallery_photos,
        GalleryLoadSettings(uri=lite_uri, gallery_version="v2", keep_previous=False),
    )  # type: ignore[arg-type]

    assert index.refresh() is True
    assert index.gallery_version == "v2"
    hits = index.search(embed(exported, gallery_photos[-1:]), k=1)
    assert hits[0][0].landmark_id == gallery_photos[-1].landmark_id


def test_after_a_switch_the_landmarks_are_the_new_gallerys(
    exported: tuple[object, ModelManifest], gallery_photos: list[Photo], milvus: Target
) -> None:
    """The same references (same ids) under renamed landmarks in a new gallery version: after the
    switch no tag names a landmark of the old version."""
    model, manifest = exported
    client = MilvusClient(uri=milvus.uri)
    photos = gallery_photos[:3]
    renamed = [replace(p, landmark_name=f"{p.landmark_name} (v2)") for p in photos]
    load_gallery(client, model, manifest, photos, milvus.settings(gallery_version="v1"))  # type: ignore[arg-type]
    index = milvus.index()
    queries = embed(exported, photos)
    before = index.search(queries, k=1)
    load_gallery(client, model, manifest, renamed, milvus.settings(gallery_version="v2"))  # type: ignore[arg-type]

    assert index.refresh() is True
    after = index.search(queries, k=1)

    assert [hits[0].reference_id for hits in after] == [hits[0].reference_id for hits in before]
    assert [hits[0].landmark_name for hits in before] == [p.landmark_name for p in photos]
    assert [hits[0].landmark_name for hits in after] == [p.landmark_name for p in renamed]


def test_references_added_to_the_searched_collection_are_found_with_their_landmarks(
    exported: tuple[object, ModelManifest],
    gallery_photos: list[Photo],
    milvus: Target,
) -> None:
    """A load resumed into the collection the alias already points to adds rows: the index finds
    them, with their landmarks, without a switch."""
    model, manifest = exported
    client = MilvusClient(uri=milvus.uri)
    settings = milvus.settings(gallery_version="v1")
    load_gallery(client, model, manifest, gallery_photos[:3], settings)  # type: ignore[arg-type]
    index = milvus.index()
    load_gallery(client, model, manifest, gallery_photos, settings)  # type: ignore[arg-type]

    assert index.refresh() is False  # the same collection
    hits = index.search(embed(exported, gallery_photos[-3:]), k=1)

    ids = [r.reference_id for r in plan_references(gallery_photos[-3:]).references]
    assert [found[0].reference_id for found in hits] == ids
    assert [found[0].landmark_id for found in hits] == [p.landmark_id for p in gallery_photos[-3:]]


# --- the network path: Milvus Lite's gRPC server ----------------------------------------


def test_load_and_search_over_the_grpc_server(
    exported: tuple[object, ModelManifest], gallery_photos: list[Photo], server: MilvusLiteServer
) -> None:
    model, manifest = exported
    client = MilvusClient(uri=server.uri)
    report = load_gallery(
        client, model, manifest, gallery_photos, GalleryLoadSettings(uri=server.uri)
    )  # type: ignore[arg-type]
    index = MilvusReferenceIndex(server.uri, alias="landmarks")
    index.check_compatible(manifest.model_version, manifest.embedding_dim)

    results = index.search(embed(exported, gallery_photos[:6]), k=3)

    assert report.row_count == len(gallery_photos)
    assert [hits[0].landmark_id for hits in results] == [p.landmark_id for p in gallery_photos[:6]]


def test_search_retries_until_a_restarted_server_answers(
    exported: tuple[object, ModelManifest], gallery_photos: list[Photo], server: MilvusLiteServer
) -> None:
    """Milvus Lite only: a restarted Milvus 2.3 standalone answers after about 9 s but fails
    searches (DEADLINE_EXCEEDED, "proxy TaskCondition context Done") for about 25 s more while
    its old node sessions expire, longer than a test should wait; those errors count as
    transient (tests/unit/worker/test_milvus_index.py)."""
    model, manifest = exported
    load_gallery(
        MilvusClient(uri=server.uri),
        model,
        manifest,
        gallery_photos[:4],
        GalleryLoadSettings(uri=server.uri),
    )  # type: ignore[arg-type]
    index = MilvusReferenceIndex(server.uri, timeout_s=2.0, retries=6, backoff_s=0.5)
    queries = embed(exported, gallery_photos[:2])
    server.stop()
    restart = threading.Timer(1.0, server.start)
    restart.start()
    try:
        results = index.search(queries, k=1)
    finally:
        restart.join()

    assert [hits[0].landmark_id for hits in results] == [p.landmark_id for p in gallery_photos[:2]]


def test_search_gives_up_with_a_clear_error_when_the_server_stays_down(
    exported: tuple[object, ModelManifest], gallery_photos: list[Photo], server: MilvusLiteServer
) -> None:
    model, manifest = exported
    load_gallery(
        MilvusClient(uri=server.uri),
        model,
        manifest,
        gallery_photos[:2],
        GalleryLoadSettings(uri=server.uri),
    )  # type: ignore[arg-type]
    index = MilvusReferenceIndex(server.uri, timeout_s=1.0, retries=2, backoff_s=0.1)
    server.stop()
    started = time.monotonic()

    with pytest.raises(GalleryUnavailableError, match="search failed"):
        index.search(np.ones((1, index.embedding_dim), np.float32), k=1)
    assert time.monotonic() - started < 30
