"""Evaluating a fine-tuned network on its split: hit@k of queries against references.

Embeds the plain photos through the same activation cache as training, for the landmarks
trained on (``known``) and the landmarks held out of training (``heldout``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from trainer.data.photos import Photo
from trainer.evaluation.retrieval import hit_at_k
from trainer.model.embedding import EmbeddingParts
from trainer.training.activation_cache import cached_activations
from trainer.training.run import TrainingSettings

EVALUATION_PAIRS = {
    "known": ("reference", "query"),
    "heldout": ("heldout_reference", "heldout_query"),
}


def plain_embeddings(
    parts: EmbeddingParts, photos: Sequence[Photo], settings: TrainingSettings
) -> np.ndarray:
    """Embeddings of the plain (un-augmented) photos, through the activation cache."""
    acts = cached_activations(
        parts.frozen,
        [p.path for p in photos],
        settings.model.input_size,
        settings.plain_cache(),
        settings.cache_description(),
    )
    out = [
        keras.ops.convert_to_numpy(
            parts.trainable(np.asarray(acts[i : i + 128, 0], np.float32), training=False)
        )
        for i in range(0, len(acts), 128)
    ]
    return np.concatenate(out).astype(np.float32)


def evaluate_split(
    parts: EmbeddingParts,
    split_parts: dict[str, list[Photo]],
    settings: TrainingSettings,
    ks: Sequence[int] = (1, 5, 10, 20, 50),
) -> dict[str, Any]:
    """hit@k of queries against references for trained (``known``) and held-out landmarks.

    Returns:
        ``{"known": {...}, "heldout": {...}}`` for the pairs present in the split, each with
        reference/query counts and ``hit_at_k`` (k → rate).
    """
    results: dict[str, Any] = {}
    for name, (reference_part, query_part) in EVALUATION_PAIRS.items():
        references, queries = split_parts.get(reference_part), split_parts.get(query_part)
        if not references or not queries:
            continue
        hits = hit_at_k(
            plain_embeddings(parts, queries, settings),
            [p.landmark_id for p in queries],
            plain_embeddings(parts, references, settings),
            [p.landmark_id for p in references],
            ks=list(ks),
        )
        results[name] = {
            "references": len(references),
            "queries": len(queries),
            "landmarks": len({p.landmark_id for p in references}),
            "hit_at_k": {int(k): float(v) for k, v in hits.items()},
        }
    return results
