"""Batch samplers: which items of the training set form each batch (plain numpy, outside the graph).

The batch miners (:mod:`trainer.metric_learning.miners`) need every batch to hold several photos of
each of its landmarks: :func:`pk_batch_indices` draws P landmarks x K photos per batch, as in
Hermans et al. 2017 (pytorch-metric-learning's ``MPerClassSampler``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["pk_batch_indices"]


def pk_batch_indices(
    labels: np.ndarray, p: int, k: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """One epoch of P x K batches: P landmarks, K photos each, every photo used at least once.

    Landmarks with fewer than K photos are sampled with repetition so every batch has exactly
    P*K rows. Landmarks with a single photo cannot form a positive pair and are skipped.

    Args:
        labels: int ``(n,)`` landmark label of every training item.
        p: landmarks per batch (at least 2).
        k: photos per landmark in a batch (at least 2).
        rng: seeded generator; the same seed gives the same batches.

    Returns:
        List of int arrays of length ``p*k``, item indices grouped landmark by landmark.

    Raises:
        ValueError: if P or K is below 2 or fewer than P landmarks have two photos.
    """
    if p < 2 or k < 2:
        raise ValueError(f"P and K must both be at least 2 (got P={p}, K={k})")
    labels = np.asarray(labels)
    by_landmark = {label: np.flatnonzero(labels == label) for label in np.unique(labels)}
    by_landmark = {label: idx for label, idx in by_landmark.items() if len(idx) >= 2}
    if len(by_landmark) < p:
        raise ValueError(
            f"P={p} landmarks per batch, but only {len(by_landmark)} landmarks have 2+ photos"
        )
    # Split each landmark's shuffled photos into chunks of K (the last chunk topped up).
    chunks: list[tuple[int, np.ndarray]] = []
    for label, idx in by_landmark.items():
        shuffled = rng.permutation(idx)
        for start in range(0, len(shuffled), k):
            chunk = shuffled[start : start + k]
            if len(chunk) < k:
                chunk = np.concatenate([chunk, rng.choice(idx, size=k - len(chunk))])
            chunks.append((int(label), chunk))
    order = rng.permutation(len(chunks))
    pending = [chunks[i] for i in order]
    batches: list[np.ndarray] = []
    while pending:
        batch: list[np.ndarray] = []
        used: set[int] = set()
        rest: list[tuple[int, np.ndarray]] = []
        for label, chunk in pending:
            if len(batch) < p and label not in used:
                batch.append(chunk)
                used.add(label)
            else:
                rest.append((label, chunk))
        if len(batch) < p:
            # Fill the last batch with fresh chunks of landmarks not in it yet.
            spare = [lab for lab in by_landmark if lab not in used]
            for label in rng.permutation(spare)[: p - len(batch)]:
                batch.append(
                    rng.choice(by_landmark[label], size=k, replace=len(by_landmark[label]) < k)
                )
        batches.append(np.concatenate(batch))
        pending = rest
    return batches
