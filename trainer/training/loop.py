"""The epoch loop of fine-tuning, on cached frozen activations, with its checkpoints.

One epoch walks every training photo at least once in P x K batches (P landmarks, K photos);
each row of a batch takes one of the photo's cached views at random (view 0 plain, views 1..V
augmented). After each epoch: validation loss (same loss on P x K batches of the plain
validation views), validation hit@1 (validation photos against the training photos as
references), a checkpoint (the trainable part with its optimizer state, and the loop state), and
early stopping on validation hit@1. The best epoch's weights are kept.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np

from trainer.evaluation.retrieval import hit_at_k
from trainer.metric_learning.samplers import pk_batch_indices
from trainer.model.embedding import EmbeddingParts, freeze_batch_norm
from trainer.training.objective import Objective, trainable_of
from trainer.training.run import TrainingResult, TrainingSettings, TrainingSummary

Log = Callable[[str], None]
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.keras"
BEST_WEIGHTS = "best.weights.h5"
STATE_FILE = "state.json"


@dataclass(frozen=True)
class LabelledActivations:
    """Cached activations and integer labels of one set of photos."""

    activations: np.ndarray  # (n, views, h, w, c)
    labels: np.ndarray  # (n,) int
    landmark_ids: list[str]


class TrainingLoop:
    """The epoch loop with its checkpoint state; :meth:`run` trains and returns the result."""

    def __init__(
        self,
        parts: EmbeddingParts,
        train: LabelledActivations,
        val: LabelledActivations,
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
        self.objective: Objective | None = None
        self.teacher_train: np.ndarray | None = None
        self.teacher_val: np.ndarray | None = None
        self.start_epoch = 0
        self.wait = 0

    # -- model ---------------------------------------------------------------------------------

    def _compile(self) -> None:
        classes = int(self.train.labels.max()) + 1 if self.train.labels.size else 0
        self.objective = Objective.build(
            self.trainable,
            self.settings.objective,
            classes=classes,
            mining=self.settings.mining,
            margin=self.settings.margin,
            reducer=self.settings.reducer,
            learning_rate=self.settings.learning_rate,
        )
        if self.objective.needs_teacher:
            # The pretrained network's embeddings of every cached view, before any step.
            views = self.train.activations.shape[1]
            self.teacher_train = np.stack(
                [self._embed(self.train.activations[:, v]) for v in range(views)], axis=1
            )
            self.teacher_val = self._embed(self.val.activations[:, 0])[:, None]
        if self.settings.objective.loss != "triplet":
            plain = (
                self.teacher_train[:, 0]
                if self.teacher_train is not None
                else self._embed(self.train.activations[:, 0])
            )
            self.objective.initialise_head(plain, self.train.labels, self.settings.seed)

    @property
    def compiled(self) -> Objective:
        """The training model and its batch targets (built by :meth:`run`)."""
        assert self.objective is not None, "compiled in run()"
        return self.objective

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
            teacher = None if self.teacher_train is None else self.teacher_train[batch, view]
            y = self.compiled.targets(self.train.labels[batch], teacher, rng)
            loss = self.compiled.model.train_on_batch(x, y)
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
            rows = np.sort(batch)
            x = np.asarray(self.val.activations[rows, 0], np.float32)
            teacher = None if self.teacher_val is None else self.teacher_val[rows, 0]
            y = self.compiled.targets(self.val.labels[rows], teacher, rng)
            losses.append(float(np.asarray(self.compiled.model.test_on_batch(x, y)).reshape(-1)[0]))
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
        self.compiled.model.save(self.checkpoints / LAST_CHECKPOINT)
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
        saved = {"loss": "triplet", "distillation": 0.0, **state["summary"]}
        for key in (
            "backbone",
            "input_size",
            "trainable_from",
            "embedding_dim",
            "mining",
            "loss",
            "distillation",
        ):
            if saved[key] != getattr(self.summary, key):
                raise ValueError(
                    f"checkpoint in {self.checkpoints} was trained with {key}={saved[key]!r}, "
                    f"not {getattr(self.summary, key)!r}; use another output folder"
                )
        self.compiled.model = keras.saving.load_model(last)
        self.trainable = trainable_of(self.compiled.model)
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
