"""The model and gallery a worker serves, and the switch to newer ones without a restart.

Two things can change under a running worker: the gallery loader moves the alias to a new
collection (a new gallery for the served model), or a new model export lands in the model
directory (and, once the loader has embedded the references with it, a gallery for it).
:class:`ModelSwitch` looks for both between batches, at most every ``check_interval_s``: a new
gallery of the served model is searched as soon as the alias moves; a new model is loaded at once
but served only from the moment the gallery behind the alias was built with it, so that a worker
never searches a gallery with a model that did not make it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from schemas.vote import VoteSettings
from worker.adapters.keras_embedder import export_version_on_disk
from worker.error_kinds import error_kind
from worker.observability.metrics import WorkerMetrics
from worker.ports import Gallery, ServedModel

log = structlog.get_logger("landmark.worker")


@dataclass(frozen=True)
class VoteOverrides:
    """Vote settings chosen by the operator; ``None`` keeps the model manifest's value."""

    k: int | None = None
    weighting: str | None = None
    threshold: float | None = None
    rule: str | None = None

    def applied_to(self, defaults: VoteSettings) -> VoteSettings:
        """The vote settings to use with a model whose manifest says ``defaults``."""
        return VoteSettings(
            k=self.k if self.k is not None else defaults.k,
            # VoteSettings rejects a weighting or rule it does not know.
            weighting=self.weighting if self.weighting is not None else defaults.weighting,  # type: ignore[arg-type]
            threshold=self.threshold if self.threshold is not None else defaults.threshold,
            rule=self.rule if self.rule is not None else defaults.rule,  # type: ignore[arg-type]
        )


class ModelSwitch:
    """Holds the served model and gallery; swaps them between batches when newer ones appear.

    Args:
        model: The served model, already loaded.
        gallery: The reference index, already checked against ``model``.
        model_dir: The export directory watched for a new model.
        check_interval_s: Least time between two looks for a new model or gallery.
        vote_overrides: The operator's vote settings (over each model's manifest).
        metrics: Where the versions in use and the errors are shown.
        worker_id: Shown with the versions.
        load_model: Loads an export directory.
        open_gallery: Opens the gallery behind the alias afresh.
    """

    def __init__(
        self,
        *,
        model: ServedModel,
        gallery: Gallery,
        model_dir: Path,
        check_interval_s: float,
        vote_overrides: VoteOverrides,
        metrics: WorkerMetrics,
        worker_id: str,
        load_model: Callable[[Path], ServedModel],
        open_gallery: Callable[[], Gallery],
    ) -> None:
        self._model = model
        self._gallery = gallery
        self._model_dir = model_dir
        self._check_interval_s = check_interval_s
        self._vote_overrides = vote_overrides
        self._metrics = metrics
        self._worker_id = worker_id
        self._load_model = load_model
        self._open_gallery = open_gallery
        self._next_check = time.monotonic() + check_interval_s
        self._pending_model: ServedModel | None = None
        self._rejected_model_version: str | None = None
        self._vote = vote_overrides.applied_to(model.manifest.vote)
        self._announce_versions()

    @property
    def model(self) -> ServedModel:
        """The model in use."""
        return self._model

    @property
    def gallery(self) -> Gallery:
        """The gallery in use (built with :attr:`model`)."""
        return self._gallery

    @property
    def vote(self) -> VoteSettings:
        """The vote settings for :attr:`model`."""
        return self._vote

    @property
    def due(self) -> bool:
        """Whether the next :meth:`maybe_switch` looks for a new gallery or model."""
        return time.monotonic() >= self._next_check

    def maybe_switch(self) -> None:
        """Between batches: pick up a new gallery behind the alias, or a new model export."""
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + self._check_interval_s
        self._look_for_new_model()
        if self._pending_model is not None:
            self._try_switch_to_pending_model()
            return
        try:
            if self._gallery.refresh():
                self._announce_versions()
                log.info(
                    "gallery switched",
                    gallery_version=self._gallery.gallery_version,
                    model_version=self._model.model_version,
                )
        except Exception as error:
            # GalleryMismatchError: the alias moved to a gallery of a model we do not have yet;
            # the index keeps searching the previous collection. Unreachable: retried later.
            self._metrics.errors.labels(kind=error_kind(error)).inc()
            log.warning("gallery refresh failed; keeping the current gallery", error=str(error))

    def close(self) -> None:
        """Close the gallery in use."""
        self._gallery.close()

    def _look_for_new_model(self) -> None:
        on_disk = export_version_on_disk(self._model_dir)
        known = {self._model.model_version, self._rejected_model_version}
        if self._pending_model is not None:
            known.add(self._pending_model.model_version)
        if on_disk is None or on_disk in known:
            return
        try:
            self._pending_model = self._load_model(self._model_dir)
            log.info(
                "new model export loaded; waiting for its gallery",
                model_version=self._pending_model.model_version,
            )
        except Exception as error:
            self._rejected_model_version = on_disk
            self._metrics.errors.labels(kind="model_load_failed").inc()
            log.warning(
                "new model export could not be loaded", model_version=on_disk, error=str(error)
            )

    def _try_switch_to_pending_model(self) -> None:
        candidate = self._pending_model
        assert candidate is not None
        try:
            gallery = self._open_gallery()
        except Exception as error:
            self._metrics.errors.labels(kind=error_kind(error)).inc()
            log.warning("cannot open the gallery to switch models", error=str(error))
            return
        try:
            gallery.check_compatible(candidate.model_version, candidate.embedding_dim)
        except Exception as error:
            gallery.close()
            log.info(
                "gallery not yet built for the new model; keeping the current one",
                pending_model_version=candidate.model_version,
                reason=str(error),
            )
            return
        previous = self._gallery
        self._model, self._gallery, self._pending_model = candidate, gallery, None
        self._vote = self._vote_overrides.applied_to(candidate.manifest.vote)
        previous.close()
        self._announce_versions()
        log.info(
            "switched model and gallery",
            model_version=self._model.model_version,
            gallery_version=self._gallery.gallery_version,
        )

    def _announce_versions(self) -> None:
        self._metrics.set_versions(
            self._model.model_version, self._gallery.gallery_version, self._worker_id
        )
