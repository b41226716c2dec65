"""Running the protocol: per fold, fine-tune on the trained landmarks, score both networks.

The *pretrained* network (the embedding model before fine-tuning) does not depend on the fold,
so it is embedded once; each fold builds the network afresh, fine-tunes it with
:func:`trainer.training.fine_tune.fine_tune` on the fold's training photos (validation photos for
early stopping) and embeds again. Plain photos are embedded through the activation cache
(:func:`trainer.training.split_evaluation.plain_embeddings`) as one list, the same for every fold
and network, so the frozen part runs once per photo; fine-tuning caches its own training views.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trainer.data.photos import Photo
from trainer.evaluation.calibration import Calibration
from trainer.evaluation.decisions import calibrate
from trainer.evaluation.expansion import NO_EXPANSION, Expansion
from trainer.model.embedding import EmbeddingParts, build_embedding_model
from trainer.protocol.embedding_store import EmbeddingStore
from trainer.protocol.folds import Fold, calibration_holdout
from trainer.protocol.scoring import (
    DEFAULT_KS,
    MARGIN_RULE,
    Embedded,
    QueryOutcomes,
    score_queries,
)
from trainer.training.fine_tune import fine_tune
from trainer.training.run import TrainingSettings, WhiteningSettings
from trainer.training.split_evaluation import plain_embeddings

Log = Callable[[str], None]


@dataclass(frozen=True)
class ProtocolSettings:
    """How folds are trained and scored.

    Attributes:
        training: the fine-tuning settings (``output_dir`` and ``resume`` are set per fold: each
            fold trains from scratch in a temporary folder).
        weights_cache_dir: where converted pretrained weights are cached.
        target_precision: precision the margin rule's threshold is calibrated for.
        calibration_confidence: confidence with which the calibration photos' precision must
            reach the target (0: their precision itself; see
            :func:`trainer.evaluation.calibration.calibrate_threshold`).
        calibration_holdout: share of trained landmarks whose references calibration removes.
        ks: the k of hit@k.
        whitening: also score each network followed by a learned whitening fitted on the
            fold's training photos (``pretrained_whitened``, ``fine_tuned_whitened``).
        expansions: named expansions (:class:`Expansion`) to score on the fine-tuned network
            (whitened when ``whitening`` is set): network ``<that network>_<name>``.
        embeddings_dir: where fine-tuned embeddings are stored and re-used (None: nowhere).
    """

    training: TrainingSettings
    weights_cache_dir: Path | None = None
    target_precision: float = 0.9
    calibration_confidence: float = 0.0
    calibration_holdout: float = 0.2
    ks: tuple[int, ...] = DEFAULT_KS
    whitening: WhiteningSettings | None = None
    expansions: dict[str, Expansion] = field(default_factory=dict)
    embeddings_dir: Path | None = None


class EmbeddingTable:
    """Embeddings of a fixed list of photos, looked up by photo."""

    def __init__(self, photos: Sequence[Photo], embeddings: np.ndarray) -> None:
        if len(photos) != len(embeddings):
            raise ValueError(f"{len(embeddings)} embeddings for {len(photos)} photos")
        self._photos = list(photos)
        self._row = {photo: row for row, photo in enumerate(photos)}
        self._embeddings = np.asarray(embeddings, dtype=np.float32)

    def whitened(self, fold: Fold, settings: WhiteningSettings) -> EmbeddingTable:
        """The same photos through a learned whitening fitted on the fold's training photos."""
        train = self.of(fold.train)
        whitening = settings.fit(train.embeddings, train.landmark_ids)
        return EmbeddingTable(self._photos, whitening.apply(self._embeddings))

    @property
    def embeddings(self) -> np.ndarray:
        return self._embeddings

    def of(self, photos: Sequence[Photo]) -> Embedded:
        """The photos' embeddings, ids and names, in the order given."""
        rows = [self._row[photo] for photo in photos]
        return Embedded(
            self._embeddings[rows],
            tuple(p.landmark_id for p in photos),
            tuple(p.landmark_name for p in photos),
        )


@dataclass(frozen=True)
class NetworkScores:
    """One network on one fold: its calibration and each query group's outcomes."""

    calibration: Calibration | None
    holdout: tuple[str, ...]
    groups: dict[str, QueryOutcomes]

    @property
    def threshold(self) -> float:
        return MARGIN_RULE.threshold if self.calibration is None else self.calibration.threshold


@dataclass
class FoldResult:
    """A fold's scores per network, its training summary and how long it took."""

    fold: Fold
    networks: dict[str, NetworkScores]
    training: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def embed_table(
    parts: EmbeddingParts, photos: Sequence[Photo], training: TrainingSettings
) -> EmbeddingTable:
    """Embed plain photos through the activation cache."""
    return EmbeddingTable(photos, plain_embeddings(parts, photos, training))


def score_network(
    table: EmbeddingTable,
    fold: Fold,
    settings: ProtocolSettings,
    expansion: Expansion = NO_EXPANSION,
) -> NetworkScores:
    """Calibrate the margin rule on the fold's validation photos, then score its query groups.

    Without validation photos nothing is calibrated and the rule's default threshold is used.
    """
    gallery = table.of(fold.gallery)
    holdout = calibration_holdout(fold, settings.calibration_holdout, settings.training.seed)
    calibration = None
    if fold.val:
        calibration = calibrate(
            table.of(fold.val),
            gallery,
            holdout,
            MARGIN_RULE,
            target_precision=settings.target_precision,
            confidence=settings.calibration_confidence,
            expansion=expansion,
        )
    threshold = MARGIN_RULE.threshold if calibration is None else calibration.threshold
    groups = {
        name: score_queries(table.of(queries), gallery, threshold, settings.ks, expansion)
        for name, queries in (("trained", fold.trained_queries), ("unseen", fold.unseen_queries))
        if queries
    }
    return NetworkScores(calibration, holdout, groups)


def build_parts(settings: ProtocolSettings) -> EmbeddingParts:
    """A fresh embedding network with the pretrained weights."""
    return build_embedding_model(
        settings.training.model, settings.training.weights, cache_dir=settings.weights_cache_dir
    )


def fine_tuned_table(
    fold: Fold,
    table_photos: Sequence[Photo],
    settings: ProtocolSettings,
    log: Log,
) -> tuple[EmbeddingTable, dict[str, Any]]:
    """The fold's fine-tuned embeddings and training summary: from the store when it has them,
    else fine-tuned now (and stored)."""
    store = (
        EmbeddingStore(settings.embeddings_dir, table_photos) if settings.embeddings_dir else None
    )
    stored = store.load("fine_tuned", settings.training, fold) if store else None
    if stored is not None:
        log(f"fold {fold.held_out}: fine-tuned embeddings read from {settings.embeddings_dir}")
        return EmbeddingTable(table_photos, stored[0]), stored[1]
    with tempfile.TemporaryDirectory(prefix=f"protocol-{fold.held_out}-") as scratch:
        training = dataclasses.replace(settings.training, output_dir=Path(scratch), resume=False)
        result = fine_tune(build_parts(settings), fold.train, fold.val, training, log)
    table = embed_table(result.parts, table_photos, settings.training)
    summary = result.summary.to_dict()
    if store is not None:
        store.save("fine_tuned", settings.training, table.embeddings, summary, fold)
    return table, summary


def score_fold(
    fold: Fold,
    pretrained: EmbeddingTable,
    fine_tuned: EmbeddingTable,
    settings: ProtocolSettings,
) -> dict[str, NetworkScores]:
    """Every network of the fold: pretrained and fine-tuned, whitened, expanded."""
    tables = {"pretrained": pretrained, "fine_tuned": fine_tuned}
    if settings.whitening is not None:
        for name in ("pretrained", "fine_tuned"):
            tables[f"{name}_whitened"] = tables[name].whitened(fold, settings.whitening)
    networks = {name: score_network(table, fold, settings) for name, table in tables.items()}
    best = "fine_tuned_whitened" if settings.whitening is not None else "fine_tuned"
    for suffix, expansion in settings.expansions.items():
        networks[f"{best}_{suffix}"] = score_network(tables[best], fold, settings, expansion)
    return networks


def run_fold(
    fold: Fold,
    table_photos: Sequence[Photo],
    pretrained: EmbeddingTable,
    settings: ProtocolSettings,
    log: Log,
) -> FoldResult:
    """Fine-tune a fresh network on the fold (or read it from the store) and score it and the
    pretrained network."""
    started = time.monotonic()
    fine_tuned, summary = fine_tuned_table(fold, table_photos, settings, log)
    networks = score_fold(fold, pretrained, fine_tuned, settings)
    return FoldResult(fold, networks, summary, round(time.monotonic() - started, 1))


def run_protocol(
    folds: Sequence[Fold],
    table_photos: Sequence[Photo],
    settings: ProtocolSettings,
    log: Log,
) -> list[FoldResult]:
    """Run every fold.

    Args:
        folds: the folds to run.
        table_photos: every photo the folds embed plainly
            (:func:`trainer.protocol.folds.evaluation_photos` of all folds, run or not).
        settings: training and scoring settings.
        log: where progress lines go.

    Returns:
        One result a fold, in order.
    """
    log(f"embedding {len(table_photos)} evaluation photos with the pretrained network")
    pretrained = embed_table(build_parts(settings), table_photos, settings.training)
    results = []
    for fold in folds:
        log(f"fold {fold.held_out}: {fold.counts()}")
        results.append(run_fold(fold, table_photos, pretrained, settings, log))
        log(f"fold {fold.held_out} done in {results[-1].seconds}s")
    return results
