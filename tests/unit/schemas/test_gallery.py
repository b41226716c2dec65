"""The gallery layout: naming, ids, index presets and search parameters."""

from __future__ import annotations

import hashlib

import pytest

from schemas.errors import InputError
from schemas.gallery import (
    INDEX_PRESETS,
    GalleryLayout,
    collection_name,
    collection_properties,
    cosine_to_squared_l2,
    reference_id_for,
    search_params,
)


def test_collection_name_joins_prefix_and_versions() -> None:
    assert collection_name("0123abcd", "g7") == "landmarks_0123abcd_g7"


def test_collection_name_replaces_characters_milvus_refuses() -> None:
    assert collection_name("v1.2-rc", "2026-11-27") == "landmarks_v1_2_rc_2026_11_27"


def test_collection_name_refuses_empty_version() -> None:
    with pytest.raises(InputError):
        collection_name("", "g1")


def test_reference_id_is_32_hex_of_sha256_of_landmark_and_bytes() -> None:
    expected = hashlib.sha256(b"india_gate\0photo").hexdigest()[:32]
    assert reference_id_for("india_gate", b"photo") == expected


def test_reference_id_differs_for_same_photo_under_another_landmark() -> None:
    assert reference_id_for("a", b"photo") != reference_id_for("b", b"photo")


@pytest.mark.parametrize(
    ("similarity", "distance"), [(1.0, 0.0), (0.0, 2.0), (-1.0, 4.0), (0.5, 1.0)]
)
def test_cosine_to_squared_l2_of_unit_vectors(similarity: float, distance: float) -> None:
    assert cosine_to_squared_l2(similarity) == pytest.approx(distance)


def test_cosine_to_squared_l2_clamps_rounding_overshoot() -> None:
    assert cosine_to_squared_l2(1.0000001) == 0.0


def test_hnsw_preset_uses_m16_and_ef_construction_200() -> None:
    layout = GalleryLayout.with_preset(128, "HNSW")
    assert layout.index_spec() == {
        "index_type": "HNSW",
        "metric_type": "IP",
        "params": {"M": 16, "efConstruction": 200},
    }


def test_hnsw_search_ef_is_at_least_64_and_at_least_k() -> None:
    layout = GalleryLayout.with_preset(128, "HNSW")
    assert search_params(layout, 5)["params"] == {"ef": 64}
    assert search_params(layout, 100)["params"] == {"ef": 100}


def test_ivf_search_probes_32_lists() -> None:
    layout = GalleryLayout.with_preset(128, "IVF_FLAT")
    assert (layout.index_params, search_params(layout, 5)["params"]) == (
        {"nlist": 1024},
        {"nprobe": 32},
    )


def test_flat_search_needs_no_parameters() -> None:
    assert search_params(GalleryLayout(128), 5) == {"metric_type": "IP", "params": {}}
    cosine = GalleryLayout(128, metric="COSINE")
    assert search_params(cosine, 5) == {"metric_type": "COSINE", "params": {}}


def test_presets_cover_every_index_type() -> None:
    assert set(INDEX_PRESETS) == {"FLAT", "HNSW", "IVF_FLAT"}


def test_preset_parameters_are_copies() -> None:
    GalleryLayout.with_preset(8, "HNSW").index_params["M"] = 99
    assert INDEX_PRESETS["HNSW"]["M"] == 16


def test_collection_properties_carry_versions_and_dimension() -> None:
    assert collection_properties("m1", "g1", 128) == {
        "model_version": "m1",
        "gallery_version": "g1",
        "embedding_dim": "128",
    }


def test_unknown_metric_is_refused() -> None:
    with pytest.raises(InputError, match="metric"):
        GalleryLayout(128, metric="HAMMING")  # type: ignore[arg-type]
