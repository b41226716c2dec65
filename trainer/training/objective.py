"""What fine-tuning minimises: the training model around the embedding network, and its targets.

The embedding network (the trainable part) is wrapped in a functional model whose outputs carry
the run's losses:

* ``triplet``: the embedding itself, with the paper's :class:`TripletLoss`;
* ``subcenter_arcface``: a :class:`SubCenterCosine` head over the embedding, with
  :class:`ArcFaceLoss` (centres start at each landmark's mean pretrained embedding);
* with ``distillation`` > 0, the embedding again, with :class:`EmbeddingDistillation` towards
  the pretrained network's embedding of the same input, weighted by ``distillation``.

:class:`Objective` builds and compiles that model and makes each batch's targets in the order of
its outputs. The head and the losses stay in training; the export is the embedding network alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from trainer.metric_learning.arcface import ArcFaceLoss, EmbeddingDistillation, SubCenterCosine
from trainer.metric_learning.losses import TripletLoss, random_triplet_targets

LOSSES = ("triplet", "subcenter_arcface")
HEAD = "arcface_head"
EMBEDDING_OUTPUT = "embedding"
DISTILLATION_OUTPUT = "distillation"


@dataclass(frozen=True)
class ObjectiveSettings:
    """The loss of a fine-tuning run.

    Attributes:
        loss: ``triplet`` (the paper) or ``subcenter_arcface``.
        distillation: weight of the embedding distillation penalty (0: none).
        arcface_scale: ``s`` of ArcFace.
        arcface_margin: the additive angular margin ``m`` of ArcFace, in radians.
        subcenters: centres a landmark in the ArcFace head.
    """

    loss: str = "triplet"
    distillation: float = 0.0
    arcface_scale: float = 30.0
    arcface_margin: float = 0.3
    subcenters: int = 3

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; expected one of {LOSSES}")
        if self.distillation < 0:
            raise ValueError(f"distillation weight must not be negative, got {self.distillation}")


class Objective:
    """The compiled training model of a run and the targets of its batches."""

    def __init__(
        self,
        model: keras.Model,
        settings: ObjectiveSettings,
        mining: str,
    ) -> None:
        self.model = model
        self.settings = settings
        self.mining = mining

    @classmethod
    def build(
        cls,
        trainable: keras.Model,
        settings: ObjectiveSettings,
        *,
        classes: int,
        mining: str,
        margin: float,
        reducer: str | None,
        learning_rate: float,
    ) -> Objective:
        """Wrap ``trainable`` in the run's training model and compile it."""
        photo = keras.Input(tuple(trainable.input_shape[1:]), name="activation")
        embedding = trainable(photo)
        outputs, losses, weights = [], [], []
        if settings.loss == "triplet":
            outputs.append(keras.layers.Identity(name=EMBEDDING_OUTPUT)(embedding))
            losses.append(TripletLoss(mining, margin, reducer))
        else:
            head = SubCenterCosine(classes, settings.subcenters, name=HEAD)
            outputs.append(head(embedding))
            losses.append(ArcFaceLoss(settings.arcface_scale, settings.arcface_margin))
        weights.append(1.0)
        if settings.distillation > 0:
            outputs.append(keras.layers.Identity(name=DISTILLATION_OUTPUT)(embedding))
            losses.append(EmbeddingDistillation())
            weights.append(settings.distillation)
        model = keras.Model(photo, outputs, name="training")
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate), loss=losses, loss_weights=weights
        )
        # Built now so that weights saved before the first step carry the same optimizer slots.
        model.optimizer.build(model.trainable_variables)
        return cls(model, settings, mining)

    @property
    def needs_teacher(self) -> bool:
        """Whether batches need the pretrained network's embeddings (distillation)."""
        return self.settings.distillation > 0

    def initialise_head(self, embeddings: np.ndarray, labels: np.ndarray, seed: int) -> None:
        """Start the ArcFace centres at each landmark's mean embedding (no-op for triplets)."""
        if self.settings.loss != "subcenter_arcface":
            return
        head = self.model.get_layer(HEAD)
        centroids = np.zeros((head.classes, embeddings.shape[1]), np.float32)
        for label in range(head.classes):
            rows = embeddings[labels == label]
            if len(rows):
                centroids[label] = rows.mean(axis=0)
            else:  # a landmark without photos keeps a random direction
                centroids[label] = np.random.default_rng([seed, label]).normal(
                    size=centroids.shape[1]
                )
        head.initial_centres(centroids, seed)

    def targets(
        self, labels: np.ndarray, teacher: np.ndarray | None, rng: np.random.Generator
    ) -> list[Any]:
        """The batch's targets, one per output of the training model."""
        if self.settings.loss == "triplet" and self.mining == "random":
            targets: list[Any] = [random_triplet_targets(labels, rng)]
        else:
            targets = [np.asarray(labels, np.int32)]
        if self.needs_teacher:
            if teacher is None:
                raise ValueError("distillation needs the pretrained embeddings of the batch")
            targets.append(np.asarray(teacher, np.float32))
        return targets


def trainable_of(model: keras.Model) -> keras.Model:
    """The embedding network inside a (re)loaded training model."""
    return model.get_layer("trainable")
