"""The model adapter: an exported Keras model behind the :class:`worker.ports.Embedder` port.

Loads ``model.keras`` with plain :func:`keras.saving.load_model` (the export uses built-in layers
only) and checks it against its manifest. Batches are padded up to a few fixed sizes so that the
compiled inference function is traced once per size, not once per batch length.

Inference call: on the TensorFlow backend a ``tf.function`` around ``model(x, training=False)``
(measured on 2 CPU cores, MobileNetV2 224 px, batch 32: ≈300 ms, against ≈370 ms for
``model.predict_on_batch``, ≈670 ms for eager ``model(x)`` and ≈890 ms for ``model.predict``); on
other backends ``model.predict_on_batch``, which Keras compiles (``jax.jit`` on JAX).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from schemas.manifest import MODEL_FILE, ModelManifest, model_version_of

#: Batch lengths the model is compiled for; a batch is padded to the next one.
DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ModelExportError(RuntimeError):
    """The export directory does not hold a usable model (missing file, version or shape mismatch)."""


class KerasEmbedder:
    """Embeds ``uint8`` photo batches with an exported Keras model.

    Args:
        model: The loaded Keras model: float32 RGB 0…255 ``(n,S,S,3)`` in, unit ``(n,d)`` out.
        manifest: Its manifest.
        batch_sizes: Padded batch lengths, ascending; longer batches are cut into chunks of the
            largest.
    """

    def __init__(
        self,
        model: Any,
        manifest: ModelManifest,
        batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES,
    ) -> None:
        if not batch_sizes or list(batch_sizes) != sorted(set(batch_sizes)) or batch_sizes[0] < 1:
            raise ValueError(f"batch_sizes must be ascending positive sizes, got {batch_sizes}")
        self.manifest = manifest
        self.model_version: str = manifest.model_version
        self.embedding_dim: int = manifest.embedding_dim
        self.input_size: int = manifest.input_size
        self._batch_sizes = batch_sizes
        self._model = model
        self._infer = _compiled_inference(model)

    @classmethod
    def from_export(
        cls,
        directory: Path | str,
        *,
        verify_hash: bool = True,
        batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES,
    ) -> KerasEmbedder:
        """Load an export directory (``model.keras`` + ``manifest.json``).

        Args:
            directory: The export directory.
            verify_hash: Check that the model file's hash is the manifest's model version.
            batch_sizes: See the class.

        Returns:
            The embedder, after one probe call that checks the output shape.

        Raises:
            ModelExportError: a file is missing, the model is not the one the manifest describes,
                or its output does not have the manifest's embedding size.
        """
        export = Path(directory)
        model_file = export / MODEL_FILE
        if not model_file.is_file():
            raise ModelExportError(f"no {MODEL_FILE} in model export {export}")
        try:
            manifest = ModelManifest.read(export)
        except (OSError, ValueError) as error:
            raise ModelExportError(f"cannot read the manifest in {export}: {error}") from error
        if verify_hash:
            actual = model_version_of(model_file)
            if actual != manifest.model_version:
                raise ModelExportError(
                    f"{model_file} has version {actual}, but its manifest says "
                    f"{manifest.model_version}: the export is incomplete or was modified"
                )
        import keras  # heavy import, only where a model is loaded

        model = keras.saving.load_model(model_file, compile=False)
        embedder = cls(model, manifest, batch_sizes)
        probe = embedder.embed(np.zeros((1, manifest.input_size, manifest.input_size, 3), np.uint8))
        if probe.shape != (1, manifest.embedding_dim):
            raise ModelExportError(
                f"model in {export} outputs shape {probe.shape[1:]}, manifest says "
                f"({manifest.embedding_dim},)"
            )
        return embedder

    def warm_up(self, batch_lengths: tuple[int, ...]) -> None:
        """Compile the inference function for these batch lengths now, not on the first batch."""
        side = self.input_size
        for length in sorted({self._padded_length(n) for n in batch_lengths if n > 0}):
            self.embed(np.zeros((length, side, side, 3), np.uint8))

    def _padded_length(self, n: int) -> int:
        return next((s for s in self._batch_sizes if s >= n), self._batch_sizes[-1])

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Embed a batch.

        Args:
            images: ``uint8`` ``(n, S, S, 3)`` RGB, S = the manifest's input size: a numpy
                array, or (JAX backend) a JAX array already on the device, as the GPU decoder
                makes it, which is not copied through the host.

        Returns:
            ``float32`` ``(n, d)`` unit-norm rows.

        Raises:
            ValueError: the batch has the wrong dtype or shape.
        """
        expected = (self.input_size, self.input_size, 3)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != expected:
            raise ValueError(
                f"expected uint8 (n, {self.input_size}, {self.input_size}, 3), "
                f"got {images.dtype} {images.shape}"
            )
        n = images.shape[0]
        if n == 0:
            return np.zeros((0, self.embedding_dim), np.float32)
        largest = self._batch_sizes[-1]
        parts = [
            self._embed_padded(images[start : start + largest]) for start in range(0, n, largest)
        ]
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def _embed_padded(self, images: np.ndarray) -> np.ndarray:
        n = images.shape[0]
        size = self._padded_length(n)
        if size > n:
            # numpy, or the array namespace of a batch decoded on the accelerator (no host copy)
            xp = np if isinstance(images, np.ndarray) else images.__array_namespace__()
            padding = xp.zeros((size - n, *images.shape[1:]), dtype=xp.uint8)
            images = xp.concatenate([images, padding])
        out = np.asarray(self._infer(images), dtype=np.float32)
        return out[:n]


def _compiled_inference(model: Any) -> Callable[[np.ndarray], Any]:
    """The fastest inference call this backend offers (see the module docstring)."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        @tf.function(reduce_retracing=True)  # type: ignore[untyped-decorator]
        def infer(batch: Any) -> Any:
            return model(tf.cast(batch, tf.float32), training=False)

        return lambda images: infer(images).numpy()

    def predict(images: np.ndarray) -> Any:
        return model.predict_on_batch(images.astype(np.float32))

    return predict


def export_version_on_disk(directory: Path | str) -> str | None:
    """The model version the export directory's manifest names now; ``None`` if unreadable.

    Cheap enough to call between batches: it reads only ``manifest.json``.
    """
    try:
        return ModelManifest.read(directory).model_version
    except (OSError, ValueError):
        return None
