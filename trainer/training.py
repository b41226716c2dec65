"""Fine-tuning the upper stages with the triplet loss on cached frozen activations.

One epoch walks every training photo at least once in P x K batches (P landmarks, K photos);
each row of a batch takes one of the photo's cached views at random (view 0 plain, views 1..V
augmented). After each epoch: validation loss (same loss on P x K batches of the plain
validation views), validation hit@1 (validation photos against the training photos as
references), a checkpoint (the trainable part with its optimizer state, and the loop state), and
early stopping on validation hit@1. The best epoch's weights are kept.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from trainer.activation_cache import ActivationCacheSettings, cached_activations
from trainer.data import Photo
from trainer.embedding_model import EmbeddingModelConfig, EmbeddingParts, freeze_batch_norm
from trainer.evaluation import hit_at_k
from trainer.losses import DEFAULT_MARGIN, TripletLoss, random_triplet_targets
from trainer.mining import pk_batch_indices

Log = Callable[[str], None]
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.keras"
BEST_WEIGHTS = "best.weights.h5"
STATE_FILE = "state.json"


@dataclass(frozen=True)
class TrainingSettings:
    """Everything that determines a fine-tuning run (besides the photos).

    Attributes:
        model: the embedding network to build.
        weights: ``"imagenet"`` or ``None`` (random initialisation).
        mining: ``random`` (the paper), ``batch_hard`` or ``batch_semi_hard``.
        margin: alpha of the triplet loss (the paper's best: 0.1).
        reducer: ``mean_active`` / ``mean``; ``None`` picks the loss's default for the mining.
        p: landmarks per batch.
        k: photos per landmark in a batch.
        epochs: the most epochs to run.
        learning_rate: Adam's learning rate.
        patience: epochs without a better validation hit@1 before stopping.
        seed: seed of batches, view choice and random triplets.
        output_dir: checkpoints and state go under ``output_dir/checkpoints``.
        cache: how the frozen activations are cached.
        resume: continue from the last checkpoint in ``output_dir`` when there is one.
    """

    model: EmbeddingModelConfig
    output_dir: Path
    cache: ActivationCacheSettings
    weights: str | None = "imagenet"
    mining: str = "batch_hard"
    margin: float = DEFAULT_MARGIN
    reducer: str | None = None
    p: int = 8
    k: int = 4
    epochs: int = 10
    learning_rate: float = 1e-4
    patience: int = 3
    seed: int = 0
    resume: bool = True


@dataclass
class TrainingSummary:
    """What was trained on, how, and how it went; goes into the export's manifest."""

    backbone: str
    input_size: int
    trainable_from: str | None
    embedding_dim: int
    mining: str
    margin: float
    p: int
    k: int
    learning_rate: float
    seed: int
    augmented_views: int
    landmarks: int
    train_photos: int
    val_photos: int
    epochs_run: int = 0
    best_epoch: int = 0
    pretrained_val_hit_at_1: float | None = None
    best_val_hit_at_1: float | None = None
    cache_seconds: float = 0.0
    train_seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TrainingResult:
    parts: EmbeddingParts
    summary: TrainingSummary


@dataclass(frozen=True)
class _Data:
    """Cached activations and integer labels of one set of photos."""

    activations: np.ndarray  # (n, views, h, w, c)
    labels: np.ndarray  # (n,) int
    landmark_ids: list[str]


def label_codes(photos: Sequence[Photo]) -> dict[str, int]:
    """Landmark id → integer label, in sorted id order."""
    return {landmark: code for code, landmark in enumerate(sorted({p.landmark_id for p in photos}))}


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fine_tune(
    parts: EmbeddingParts,
    train_photos: Sequence[Photo],
    val_photos: Sequence[Photo],
    settings: TrainingSettings,
    log: Log = _stderr,
) -> TrainingResult:
    """Fine-tune the trainable part of ``parts`` on the photos; returns the best epoch's network.

    Args:
        parts: the embedding model's frozen and trainable parts (from
            :func:`trainer.embedding_model.build_embedding_model`).
        train_photos: training photos (at least P landmarks with 2+ photos).
        val_photos: validation photos of the same landmarks (may be empty: no early stopping).
        settings: the run's settings.
        log: where progress lines go.

    Returns:
        The parts with the trained trainable part (best validation hit@1 epoch) and a summary.

    Raises:
        ValueError: too few landmarks for P, or photos that cannot be decoded.
    """
    codes = label_codes(train_photos)
    started = time.monotonic()
    description = {
        "backbone": settings.model.backbone,
        "trainable_from": settings.model.trainable_from,
    }
    train = _load(
        parts, train_photos, codes, settings.model.input_size, settings.cache, description, log
    )
    plain_cache = ActivationCacheSettings(
        cache_dir=settings.cache.cache_dir,
        augmented_views=0,
        dtype=settings.cache.dtype,
        batch_size=settings.cache.batch_size,
        workers=settings.cache.workers,
    )
    val = _load(parts, val_photos, codes, settings.model.input_size, plain_cache, description, log)
    summary = TrainingSummary(
        backbone=settings.model.backbone,
        input_size=settings.model.input_size,
        trainable_from=settings.model.trainable_from,
        embedding_dim=parts.embedding_dim,
        mining=settings.mining,
        margin=settings.margin,
        p=settings.p,
        k=settings.k,
        learning_rate=settings.learning_rate,
        seed=settings.seed,
        augmented_views=settings.cache.augmented_views,
        landmarks=len(codes),
        train_photos=len(train_photos),
        val_photos=len(val_photos),
        cache_seconds=round(time.monotonic() - started, 1),
    )
    loop = _Loop(parts, train, val, settings, summary, log)
    return loop.run()


def _load(
    parts: EmbeddingParts,
    photos: Sequence[Photo],
    codes: dict[str, int],
    input_size: int,
    cache: ActivationCacheSettings,
    description: dict[str, Any],
    log: Log,
) -> _Data:
    if not photos:
        shape = (0, 1, *parts.frozen.output_shape[1:])
        return _Data(np.zeros(shape, np.float16), np.zeros(0, np.int32), [])
    unknown = sorted({p.landmark_id for p in photos} - set(codes))
    if unknown:
        raise ValueError(f"validation photos of landmarks not in training: {unknown[:5]}")

    def progress(done: int, total: int) -> None:
        if done == total or done % (cache.batch_size * 10) < cache.batch_size:
            log(
                f"caching frozen activations: {done}/{total} photos x {1 + cache.augmented_views} views"
            )

    acts = cached_activations(
        parts.frozen, [p.path for p in photos], input_size, cache, description, progress
    )
    labels = np.array([codes[p.landmark_id] for p in photos], np.int32)
    return _Data(acts, labels, [p.landmark_id for p in photos])


class _Loop:
    """The epoch loop with its checkpoint state."""

    def __init__(
        self,
        parts: EmbeddingParts,
        train: _Data,
        val: _Data,
        settings: TrainingSettings,
        summary: TrainingSummary,
        log: Log,
    ) -> None:
        self.parts = parts
        self.train = train
        self.val = val
        self.settings = settings
        self.summary = summary
        self.log = log
        self.checkpoints = settings.output_dir / CHECKPOINT_DIR
        self.trainable = parts.trainable
        self.start_epoch = 0
        self.wait = 0

    # -- model ---------------------------------------------------------------------------------

    def _compile(self) -> None:
        self.trainable.compile(
            optimizer=keras.optimizers.Adam(self.settings.learning_rate),
            loss=TripletLoss(self.settings.mining, self.settings.margin, self.settings.reducer),
        )
        # Built now so that weights saved before the first step carry the same optimizer slots.
        self.trainable.optimizer.build(self.trainable.trainable_variables)

    def _targets(self, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.settings.mining == "random":
            return random_triplet_targets(labels, rng)
        return labels

    def _embed(self, activations: np.ndarray, batch_size: int = 128) -> np.ndarray:
        out = [
            keras.ops.convert_to_numpy(
                self.trainable(
                    np.asarray(activations[i : i + batch_size], np.float32), training=False
                )
            )
            for i in range(0, len(activations), batch_size)
        ]
        return np.concatenate(out) if out else np.zeros((0, self.parts.embedding_dim), np.float32)

    # -- epoch pieces --------------------------------------------------------------------------

    def _train_epoch(self, epoch: int) -> float:
        rng = np.random.default_rng([self.settings.seed, epoch])
        batches = pk_batch_indices(self.train.labels, self.settings.p, self.settings.k, rng)
        views = self.train.activations.shape[1]
        losses = []
        started = time.monotonic()
        for step, batch in enumerate(batches, start=1):
            view = rng.integers(0, views, size=len(batch))
            order = np.argsort(batch, kind="stable")  # memmap reads go faster in file order
            x = np.empty((len(batch), *self.train.activations.shape[2:]), np.float32)
            x[order] = self.train.activations[batch[order], view[order]]
            y = self._targets(self.train.labels[batch], rng)
            loss = self.trainable.train_on_batch(x, y)
            losses.append(float(np.asarray(loss).reshape(-1)[0]))
            if step == len(batches) or step % 10 == 0:
                self.log(
                    f"epoch {epoch + 1}/{self.settings.epochs} step {step}/{len(batches)} "
                    f"loss {np.mean(losses):.4f} ({time.monotonic() - started:.0f}s)"
                )
        return float(np.mean(losses))

    def _val_loss(self) -> float | None:
        _, counts = np.unique(self.val.labels, return_counts=True)
        usable = int(np.sum(counts >= 2))
        if usable < 2:
            return None
        rng = np.random.default_rng([self.settings.seed, 1_000_003])
        k = min(self.settings.k, int(np.max(counts)))
        batches = pk_batch_indices(self.val.labels, min(self.settings.p, usable), max(k, 2), rng)
        losses = []
        for batch in batches:
            x = np.asarray(self.val.activations[np.sort(batch), 0], np.float32)
            y = self._targets(self.val.labels[np.sort(batch)], rng)
            losses.append(float(np.asarray(self.trainable.test_on_batch(x, y)).reshape(-1)[0]))
        return float(np.mean(losses))

    def _val_hit_at_1(self) -> float | None:
        if not len(self.val.labels):
            return None
        queries = self._embed(self.val.activations[:, 0])
        references = self._embed(self.train.activations[:, 0])
        return hit_at_k(
            queries, self.val.landmark_ids, references, self.train.landmark_ids, ks=[1]
        )[1]

    # -- checkpoints ---------------------------------------------------------------------------

    def _save(self, epoch: int, improved: bool) -> None:
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        self.trainable.save(self.checkpoints / LAST_CHECKPOINT)
        if improved:
            self.trainable.save_weights(self.checkpoints / BEST_WEIGHTS)
        state = {"epochs_done": epoch + 1, "wait": self.wait, "summary": self.summary.to_dict()}
        (self.checkpoints / STATE_FILE).write_text(json.dumps(state, indent=2))

    def _resume(self) -> None:
        state_file = self.checkpoints / STATE_FILE
        last = self.checkpoints / LAST_CHECKPOINT
        if not (self.settings.resume and state_file.exists() and last.exists()):
            return
        state = json.loads(state_file.read_text())
        saved = state["summary"]
        for key in ("backbone", "input_size", "trainable_from", "embedding_dim", "mining"):
            if saved[key] != getattr(self.summary, key):
                raise ValueError(
                    f"checkpoint in {self.checkpoints} was trained with {key}={saved[key]!r}, "
                    f"not {getattr(self.summary, key)!r}; use another output folder"
                )
        self.trainable = keras.saving.load_model(last)
        freeze_batch_norm(self.trainable)
        self.start_epoch = int(state["epochs_done"])
        self.wait = int(state["wait"])
        for key in (
            "epochs_run",
            "best_epoch",
            "pretrained_val_hit_at_1",
            "best_val_hit_at_1",
            "history",
        ):
            setattr(self.summary, key, saved[key])
        self.summary.train_seconds = float(saved["train_seconds"])
        self.log(f"resumed from {last} after epoch {self.start_epoch}")

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> TrainingResult:
        self._compile()
        self._resume()
        if self.start_epoch == 0:
            # The starting network is epoch 0: fine-tuning must beat it to be kept.
            self.summary.pretrained_val_hit_at_1 = self._val_hit_at_1()
            self.summary.best_val_hit_at_1 = self.summary.pretrained_val_hit_at_1
            if self.summary.best_val_hit_at_1 is not None:
                self.checkpoints.mkdir(parents=True, exist_ok=True)
                self.trainable.save_weights(self.checkpoints / BEST_WEIGHTS)
            self.log(f"before fine-tuning: val hit@1 {self.summary.pretrained_val_hit_at_1}")
        for epoch in range(self.start_epoch, self.settings.epochs):
            if self.val.labels.size and self.wait >= self.settings.patience:
                break
            started = time.monotonic()
            train_loss = self._train_epoch(epoch)
            val_loss = self._val_loss()
            val_hit = self._val_hit_at_1()
            self.summary.train_seconds = round(
                self.summary.train_seconds + time.monotonic() - started, 1
            )
            best = self.summary.best_val_hit_at_1
            improved = val_hit is None or best is None or val_hit > best
            if improved:
                self.summary.best_val_hit_at_1 = val_hit
                self.summary.best_epoch = epoch + 1
                self.wait = 0
            else:
                self.wait += 1
            self.summary.epochs_run = epoch + 1
            self.summary.history.append(
                {
                    "epoch": epoch + 1,
                    "loss": train_loss,
                    "val_loss": val_loss,
                    "val_hit_at_1": val_hit,
                }
            )
            self.log(
                f"epoch {epoch + 1}: loss {train_loss:.4f} val_loss {val_loss} "
                f"val hit@1 {val_hit} {'(best)' if improved else ''}"
            )
            self._save(epoch, improved)
        best_weights = self.checkpoints / BEST_WEIGHTS
        if best_weights.exists():
            self.trainable.load_weights(best_weights)
        parts = EmbeddingParts(frozen=self.parts.frozen, trainable=self.trainable)
        return TrainingResult(parts=parts, summary=self.summary)


EVALUATION_PAIRS = {
    "known": ("reference", "query"),
    "heldout": ("heldout_reference", "heldout_query"),
}


def plain_embeddings(
    parts: EmbeddingParts, photos: Sequence[Photo], settings: TrainingSettings
) -> np.ndarray:
    """Embeddings of the plain (un-augmented) photos, through the activation cache."""
    plain = ActivationCacheSettings(
        cache_dir=settings.cache.cache_dir,
        augmented_views=0,
        dtype=settings.cache.dtype,
        batch_size=settings.cache.batch_size,
        workers=settings.cache.workers,
    )
    description = {
        "backbone": settings.model.backbone,
        "trainable_from": settings.model.trainable_from,
    }
    acts = cached_activations(
        parts.frozen, [p.path for p in photos], settings.model.input_size, plain, description
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
