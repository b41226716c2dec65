"""Generalised-mean (GeM) pooling with a learned exponent (Radenović et al. 2018).

``GeM(x) = (mean over positions of x^p)^(1/p)`` per channel: p = 1 is average pooling, p → ∞
max pooling; a learned p lets fine-tuning weigh the strongest local responses (the landmark's
distinctive parts) above the background. The activations it pools are non-negative (ReLU6 in
MobileNetV2); they are clipped at ``eps`` so that the power stays defined.

A custom layer: an export that holds it loads only where this module is imported, which the
worker does not do. It is an option of the trainer, measured with the protocol
(``docs/results/protocol.md``), not a default.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="landmark")
class GeneralizedMeanPooling(keras.layers.Layer):
    """``(n, h, w, c)`` → ``(n, c)``: the generalised mean over positions, one learned p."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if p <= 0:
            raise ValueError(f"GeM p must be positive, got {p}")
        self.initial_p = float(p)
        self.eps = float(eps)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        self.p = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(self.initial_p), name="p"
        )

    def call(self, inputs: Any) -> Any:
        p = ops.maximum(self.p, 1.0)  # below 1 it would favour the weakest responses
        # exp((logsumexp(p log x) - log n) / p): the same mean, without overflowing x^p.
        logs = ops.log(ops.maximum(inputs, self.eps))
        positions = ops.cast(ops.shape(inputs)[1] * ops.shape(inputs)[2], logs.dtype)
        summed = ops.logsumexp(p * logs, axis=(1, 2))
        return ops.exp((summed - ops.log(positions)) / p)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (input_shape[0], input_shape[-1])

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"p": self.initial_p, "eps": self.eps})
        return config
