"""torchvision's MobileNetV2 (``mobilenet_v2-b0353104.pth``) rebuilt from built-in Keras layers.

Mirrors ``torchvision.models.mobilenet_v2`` exactly: stride-2 convolutions pad one pixel on every
side (``ZeroPadding2D(1)`` + ``"valid"``, not TensorFlow's asymmetric ``"same"``), batch norm with
epsilon 1e-5, ReLU6, linear bottlenecks, residual adds when stride is 1 and widths match. Inputs
are float32 RGB in 0..255; the stem scales them with ImageNet's mean and std the way
``torchvision.transforms.Normalize`` does after ``ToTensor``.

Stages: ``stem`` (features.0), ``block_1`` .. ``block_17`` (features.1-17, the inverted
residual blocks), ``head_conv`` (features.18).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras
from keras import layers

from trainer.backbones.torch_conversion import TorchLayer

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BN_EPSILON = 1e-5
# PyTorch momentum 0.1 weighs the new batch; Keras momentum weighs the running value.
BN_MOMENTUM = 0.9
STEM_WIDTH = 32
HEAD_WIDTH = 1280
FEATURE_DIM = HEAD_WIDTH
DROPOUT = 0.2
NUM_CLASSES = 1000

# (expansion t, output channels c, repeats n, first stride s) from the MobileNetV2 paper, Table 2.
_SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


@dataclass(frozen=True)
class _Block:
    index: int  # torchvision's features.<index>
    in_channels: int
    out_channels: int
    expansion: int
    stride: int

    @property
    def name(self) -> str:
        return f"block_{self.index}"

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels


def _blocks() -> list[_Block]:
    blocks: list[_Block] = []
    channels, index = STEM_WIDTH, 1
    for t, c, n, s in _SETTINGS:
        for repeat in range(n):
            blocks.append(_Block(index, channels, c, t, s if repeat == 0 else 1))
            channels, index = c, index + 1
    return blocks


BLOCKS = tuple(_blocks())
STAGE_NAMES = ("stem", *(b.name for b in BLOCKS), "head_conv")


def _conv_bn(
    x: keras.KerasTensor, name: str, filters: int, kernel: int, stride: int, relu: bool
) -> keras.KerasTensor:
    if kernel > 1 and stride > 1:
        x = layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
    padding = "valid" if kernel == 1 or stride > 1 else "same"
    x = layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=False, name=name)(
        x
    )
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.ReLU(max_value=6.0, name=f"{name}_relu")(x) if relu else x


def _depthwise_bn(x: keras.KerasTensor, name: str, stride: int) -> keras.KerasTensor:
    if stride > 1:
        x = layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
    x = layers.DepthwiseConv2D(
        3, strides=stride, padding="valid" if stride > 1 else "same", use_bias=False, name=name
    )(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.ReLU(max_value=6.0, name=f"{name}_relu")(x)


def _stem(x: keras.KerasTensor) -> keras.KerasTensor:
    x = layers.Normalization(
        mean=[255.0 * m for m in IMAGENET_MEAN],
        variance=[(255.0 * s) ** 2 for s in IMAGENET_STD],
        name="input_scaling",
    )(x)
    return _conv_bn(x, "stem_conv", STEM_WIDTH, 3, 2, relu=True)


def _inverted_residual(block: _Block) -> Callable[[keras.KerasTensor], keras.KerasTensor]:
    def apply(inputs: keras.KerasTensor) -> keras.KerasTensor:
        x = inputs
        if block.expansion != 1:
            x = _conv_bn(
                x, f"{block.name}_expand", block.in_channels * block.expansion, 1, 1, relu=True
            )
        x = _depthwise_bn(x, f"{block.name}_depthwise", block.stride)
        x = _conv_bn(x, f"{block.name}_project", block.out_channels, 1, 1, relu=False)
        if block.residual:
            x = layers.Add(name=f"{block.name}_add")([inputs, x])
        return x

    return apply


def _head(x: keras.KerasTensor) -> keras.KerasTensor:
    return _conv_bn(x, "head_conv", HEAD_WIDTH, 1, 1, relu=True)


def stage_builders() -> list[tuple[str, Callable[[keras.KerasTensor], keras.KerasTensor]]]:
    """The stages in order, each as (name, function from input tensor to output tensor)."""
    return [
        ("stem", _stem),
        *((b.name, _inverted_residual(b)) for b in BLOCKS),
        ("head_conv", _head),
    ]


def classifier_top(x: keras.KerasTensor) -> keras.KerasTensor:
    """torchvision's classifier: global average pooling, dropout, 1000 logits (no softmax)."""
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dropout(DROPOUT, name="dropout")(x)
    return layers.Dense(NUM_CLASSES, name="predictions")(x)


def torch_layers() -> list[TorchLayer]:
    """Which checkpoint module feeds which Keras layer."""
    rows = [
        TorchLayer("stem_conv", "features.0.0", "conv"),
        TorchLayer("stem_conv_bn", "features.0.1", "batch_norm"),
    ]
    for b in BLOCKS:
        conv = f"features.{b.index}.conv"
        if b.expansion != 1:
            rows += [
                TorchLayer(f"{b.name}_expand", f"{conv}.0.0", "conv"),
                TorchLayer(f"{b.name}_expand_bn", f"{conv}.0.1", "batch_norm"),
            ]
            dw, project = f"{conv}.1", f"{conv}.2"
            project_bn = f"{conv}.3"
        else:
            dw, project, project_bn = f"{conv}.0", f"{conv}.1", f"{conv}.2"
        rows += [
            TorchLayer(f"{b.name}_depthwise", f"{dw}.0", "depthwise"),
            TorchLayer(f"{b.name}_depthwise_bn", f"{dw}.1", "batch_norm"),
            TorchLayer(f"{b.name}_project", project, "conv"),
            TorchLayer(f"{b.name}_project_bn", project_bn, "batch_norm"),
        ]
    rows += [
        TorchLayer("head_conv", "features.18.0", "conv"),
        TorchLayer("head_conv_bn", "features.18.1", "batch_norm"),
        TorchLayer("predictions", "classifier.1", "dense"),
    ]
    return rows
