"""Mapping PyTorch state-dict tensors onto Keras layer weights.

A backbone describes its layers as :class:`TorchLayer` rows (Keras layer name, PyTorch module
prefix, kind). :func:`convert_state_dict` turns a state dict into ``{"<layer>/<index>": array}`` in
the order ``layer.get_weights()`` uses, and :func:`assign_weights` loads such a dict into built
models. Layouts: convolution OIHW -> HWIO, depthwise (C, 1, H, W) -> (H, W, C, 1),
dense (out, in) -> (in, out), batch norm (weight, bias, running_mean, running_var) ->
(gamma, beta, moving_mean, moving_variance).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import keras
import numpy as np

LayerKind = Literal["conv", "depthwise", "batch_norm", "dense"]

# Bookkeeping tensors of torch's BatchNorm that have no Keras counterpart.
_IGNORED_SUFFIXES = (".num_batches_tracked",)


@dataclass(frozen=True)
class TorchLayer:
    """One Keras layer and the PyTorch module whose parameters it takes."""

    keras_name: str
    torch_prefix: str
    kind: LayerKind


def _convert_one(state: Mapping[str, np.ndarray], layer: TorchLayer) -> list[np.ndarray]:
    def get(suffix: str) -> np.ndarray:
        key = f"{layer.torch_prefix}.{suffix}"
        if key not in state:
            raise KeyError(
                f"checkpoint has no {key!r} (needed by Keras layer {layer.keras_name!r})"
            )
        return np.asarray(state[key], dtype=np.float32)

    if layer.kind == "conv":
        return [get("weight").transpose(2, 3, 1, 0)]
    if layer.kind == "depthwise":
        return [get("weight").transpose(2, 3, 0, 1)]
    if layer.kind == "batch_norm":
        return [get("weight"), get("bias"), get("running_mean"), get("running_var")]
    if layer.kind == "dense":
        return [get("weight").T, get("bias")]
    raise ValueError(f"unknown layer kind {layer.kind!r}")


def convert_state_dict(
    state: Mapping[str, np.ndarray], layers: Sequence[TorchLayer]
) -> dict[str, np.ndarray]:
    """Convert every mapped tensor; fail if the checkpoint has tensors the mapping ignores.

    Raises:
        KeyError: a mapped tensor is missing from the checkpoint.
        ValueError: the checkpoint holds tensors no layer takes (wrong architecture).
    """
    converted: dict[str, np.ndarray] = {}
    used: set[str] = set()
    for layer in layers:
        for index, array in enumerate(_convert_one(state, layer)):
            converted[f"{layer.keras_name}/{index}"] = np.ascontiguousarray(array)
        used.update(k for k in state if k.startswith(f"{layer.torch_prefix}."))
    unused = sorted(k for k in state if k not in used and not k.endswith(_IGNORED_SUFFIXES))
    if unused:
        raise ValueError(f"checkpoint tensors not mapped to any Keras layer: {unused[:8]}")
    return converted


def assign_weights(models: Iterable[keras.Model], weights: Mapping[str, np.ndarray]) -> None:
    """Set the weights of every layer of ``models`` that has weights, by layer name.

    Raises:
        KeyError: a layer's weights are missing from ``weights``.
        ValueError: a converted array's shape does not fit its layer.
    """
    for model in models:
        for layer in model.layers:
            if not layer.weights or isinstance(layer, keras.Model):
                continue  # nested stages are assigned on their own
            arrays = []
            for index, variable in enumerate(layer.weights):
                key = f"{layer.name}/{index}"
                if key not in weights:
                    raise KeyError(f"converted weights have no {key!r}")
                array = weights[key]
                if tuple(array.shape) != tuple(variable.shape):
                    raise ValueError(
                        f"{key}: converted shape {array.shape} != layer shape {tuple(variable.shape)}"
                    )
                arrays.append(array)
            layer.set_weights(arrays)
