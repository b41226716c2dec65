"""Batch photo decoding on an NVIDIA GPU (``--decoder gpu``; the ``gpu-decode`` extra)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from worker.ports import BatchDecoder


def batch_decoder_for(decoder: str) -> BatchDecoder | None:
    """The batch decoder the ``--decoder`` setting names: None for ``cpu``.

    Raises:
        RuntimeError: ``gpu`` where it cannot run (Keras not on JAX, a library or the GPU
            missing); the message says what to do.
    """
    if decoder == "cpu":
        return None
    import keras

    if keras.backend.backend() != "jax":
        raise RuntimeError(
            "--decoder gpu hands the model device arrays through JAX: set KERAS_BACKEND=jax "
            f"(the backend is {keras.backend.backend()})"
        )
    from worker.adapters.gpu_decode.decoder import GpuPhotoDecoder

    return GpuPhotoDecoder.on_nvidia_gpu()
