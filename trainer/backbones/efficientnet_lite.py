"""EfficientNet-Lite0 (``efficientnet-lite0-57934424.pth``) rebuilt from built-in Keras layers.

The checkpoint uses the key names of lukemelas' ``EfficientNet-PyTorch`` (``_conv_stem``,
``_blocks.<i>._expand_conv`` ...), with the Lite changes of Google's TF reference: ReLU6 instead of
swish, no squeeze-and-excitation, stem (32) and head (1280) widths fixed. The weights come from the
TensorFlow original, so convolutions pad like TensorFlow's ``"same"`` (the odd pixel goes to the
bottom/right), batch norm epsilon is 1e-3, and inputs are scaled as (x - 127) / 128.

Stages: ``stem``, ``block1a``, ``block2a``, ``block2b``, ``block3a`` ... ``block7a``, ``head_conv``
(Keras' EfficientNet block naming: stage number, then a letter per repeat).
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass

import keras
from keras import layers

from trainer.backbones.torch_conversion import TorchLayer

INPUT_MEAN = 127.0
INPUT_STD = 128.0
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99
STEM_WIDTH = 32
HEAD_WIDTH = 1280
FEATURE_DIM = HEAD_WIDTH
DROPOUT = 0.2
NUM_CLASSES = 1000

# (kernel, first stride, expansion, output channels, repeats) of EfficientNet-B0/Lite0.
_SETTINGS = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)


@dataclass(frozen=True)
class _Block:
    index: int  # the checkpoint's _blocks.<index>
    name: str
    kernel: int
    stride: int
    expansion: int
    in_channels: int
    out_channels: int

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels


def _blocks() -> list[_Block]:
    blocks: list[_Block] = []
    channels = STEM_WIDTH
    for stage, (kernel, stride, expansion, out, repeats) in enumerate(_SETTINGS, start=1):
        for repeat in range(repeats):
            name = f"block{stage}{string.ascii_lowercase[repeat]}"
            blocks.append(
                _Block(
                    len(blocks),
                    name,
                    kernel,
                    stride if repeat == 0 else 1,
                    expansion,
                    channels,
                    out,
                )
            )
            channels = out
    return blocks


BLOCKS = tuple(_blocks())
STAGE_NAMES = ("stem", *(b.name for b in BLOCKS), "head_conv")


def _bn_relu(x: keras.KerasTensor, name: str, relu: bool = True) -> keras.KerasTensor:
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.ReLU(max_value=6.0, name=f"{name}_relu")(x) if relu else x


def _stem(x: keras.KerasTensor) -> keras.KerasTensor:
    x = layers.Rescaling(1.0 / INPUT_STD, offset=-INPUT_MEAN / INPUT_STD, name="input_scaling")(x)
    x = layers.Conv2D(STEM_WIDTH, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    return _bn_relu(x, "stem_conv")


def _mbconv(block: _Block) -> Callable[[keras.KerasTensor], keras.KerasTensor]:
    def apply(inputs: keras.KerasTensor) -> keras.KerasTensor:
        x = inputs
        if block.expansion != 1:
            width = block.in_channels * block.expansion
            x = layers.Conv2D(width, 1, use_bias=False, name=f"{block.name}_expand")(x)
            x = _bn_relu(x, f"{block.name}_expand")
        x = layers.DepthwiseConv2D(
            block.kernel,
            strides=block.stride,
            padding="same",
            use_bias=False,
            name=f"{block.name}_depthwise",
        )(x)
        x = _bn_relu(x, f"{block.name}_depthwise")
        x = layers.Conv2D(block.out_channels, 1, use_bias=False, name=f"{block.name}_project")(x)
        x = _bn_relu(x, f"{block.name}_project", relu=False)
        if block.residual:
            x = layers.Add(name=f"{block.name}_add")([inputs, x])
        return x

    return apply


def _head(x: keras.KerasTensor) -> keras.KerasTensor:
    x = layers.Conv2D(HEAD_WIDTH, 1, use_bias=False, name="head_conv")(x)
    return _bn_relu(x, "head_conv")


def stage_builders() -> list[tuple[str, Callable[[keras.KerasTensor], keras.KerasTensor]]]:
    """The stages in order, each as (name, function from input tensor to output tensor)."""
    return [("stem", _stem), *((b.name, _mbconv(b)) for b in BLOCKS), ("head_conv", _head)]


def classifier_top(x: keras.KerasTensor) -> keras.KerasTensor:
    """Global average pooling, dropout, 1000 logits (no softmax)."""
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dropout(DROPOUT, name="dropout")(x)
    return layers.Dense(NUM_CLASSES, name="predictions")(x)


def torch_layers() -> list[TorchLayer]:
    """Which checkpoint module feeds which Keras layer."""
    rows = [
        TorchLayer("stem_conv", "_conv_stem", "conv"),
        TorchLayer("stem_conv_bn", "_bn0", "batch_norm"),
    ]
    for b in BLOCKS:
        prefix = f"_blocks.{b.index}"
        if b.expansion != 1:
            rows += [
                TorchLayer(f"{b.name}_expand", f"{prefix}._expand_conv", "conv"),
                TorchLayer(f"{b.name}_expand_bn", f"{prefix}._bn0", "batch_norm"),
            ]
        rows += [
            TorchLayer(f"{b.name}_depthwise", f"{prefix}._depthwise_conv", "depthwise"),
            TorchLayer(f"{b.name}_depthwise_bn", f"{prefix}._bn1", "batch_norm"),
            TorchLayer(f"{b.name}_project", f"{prefix}._project_conv", "conv"),
            TorchLayer(f"{b.name}_project_bn", f"{prefix}._bn2", "batch_norm"),
        ]
    rows += [
        TorchLayer("head_conv", "_conv_head", "conv"),
        TorchLayer("head_conv_bn", "_bn1", "batch_norm"),
        TorchLayer("predictions", "_fc", "dense"),
    ]
    return rows
