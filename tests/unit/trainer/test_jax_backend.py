"""The embedding model builds, embeds and trains one step under the JAX backend."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

SCRIPT = textwrap.dedent(
    """
    import keras, numpy as np
    assert keras.backend.backend() == "jax", keras.backend.backend()
    from trainer.model.embedding import (
        EmbeddingModelConfig, assemble, build_embedding_model, embed_photos
    )
    from trainer.metric_learning.losses import TripletLoss

    config = EmbeddingModelConfig("mobilenet_v2", 64, 8, "block_16")
    parts = build_embedding_model(config, weights=None)
    photos = np.random.default_rng(0).integers(0, 256, size=(4, 64, 64, 3)).astype(np.uint8)
    before = embed_photos(assemble(parts), photos)
    assert before.shape == (4, 8)
    assert np.allclose(np.linalg.norm(before, axis=1), 1.0, atol=1e-5)
    parts.trainable.compile(optimizer=keras.optimizers.Adam(1e-2), loss=TripletLoss("batch_hard", 0.5))
    acts = keras.ops.convert_to_numpy(parts.frozen(photos.astype(np.float32)))
    loss = parts.trainable.train_on_batch(acts, np.array([0, 0, 1, 1]))
    after = embed_photos(assemble(parts), photos)
    assert np.isfinite(loss)
    assert not np.allclose(before, after)

    # The chosen objective: sub-center ArcFace with the distillation penalty, one step.
    from trainer.training.objective import Objective, ObjectiveSettings
    objective = Objective.build(
        parts.trainable, ObjectiveSettings("subcenter_arcface", 1.0), classes=2,
        mining="random", margin=0.1, reducer=None, learning_rate=1e-2,
    )
    teacher = keras.ops.convert_to_numpy(parts.trainable(acts))
    objective.initialise_head(teacher, np.array([0, 0, 1, 1]), seed=0)
    targets = objective.targets(np.array([0, 0, 1, 1]), teacher, np.random.default_rng(0))
    losses = objective.model.train_on_batch(acts, targets)
    assert np.all(np.isfinite(np.asarray(losses)))
    print("JAX-OK", float(loss))
    """
)


@pytest.mark.slow
def test_embedding_model_trains_one_step_under_jax():
    pytest.importorskip("jax", reason="the JAX backend needs jax installed")
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": str(REPO),
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "JAX-OK" in done.stdout
