"""``landmark-train``: fine-tune the triplet embedding network and export it.

Reads a folder of landmark folders (or a Google-Landmarks CSV), makes the seeded split (or reads
a ``split.json`` from ``python -m trainer.cli.split``), fine-tunes the upper stages on cached frozen
activations, evaluates hit@k on the split's query/reference parts, and exports ``model.keras`` +
``manifest.json`` into ``<output>/model``. Every flag has an environment variable.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from configuration import load_settings, setting
from trainer.cli.settings import (
    CacheSettings,
    SplitSettings,
    decodable_split,
    manifest_parameters,
    split_photos,
)
from trainer.cli.training_options import TrainingOptions

DESCRIPTION = "Fine-tune a triplet embedding network on landmark photos and export it."


class TrainSettings(SplitSettings, CacheSettings, TrainingOptions):
    """What ``landmark-train`` trains and how, built once from flags and ``LANDMARK_…`` variables.

    The split flags are the shared :class:`~trainer.cli.settings.SplitSettings` of
    ``python -m trainer.cli.split``; the training knobs the shared
    :class:`~trainer.cli.training_options.TrainingOptions` of the protocol.
    """

    group_title: ClassVar[str] = "training"

    output: Path = setting(
        Path("runs/train"), help="output folder (checkpoints, split.json, model/)"
    )
    split: Path | None = setting(
        None,
        help="existing split.json (from python -m trainer.cli.split); overrides the split flags",
    )
    seed: int = setting(0, help="seed of split, batches and augmentation")
    no_resume: bool = setting(False, help="start over even if a checkpoint exists")


def settings_from(argv: Sequence[str] | None = None) -> TrainSettings:
    """The settings of one ``landmark-train`` run from ``argv`` and the environment."""
    return load_settings(TrainSettings, argv, prog="landmark-train", description=DESCRIPTION)


def trainable_from_of(settings: TrainSettings) -> str | None:
    """The first trainable stage, ``auto`` resolved for the backbone."""
    return settings.resolved_trainable_from()


def _split(settings: TrainSettings, output: Path) -> Any:
    from trainer.splits import manifest as split_manifest

    if settings.split is not None:
        # A split made elsewhere may list photos that cannot be decoded: leave them out too.
        return decodable_split(
            split_manifest.read_manifest(settings.split), settings.input_size, settings.workers
        )
    split = split_photos(settings, settings.seed, settings.input_size, settings.workers)
    split_manifest.write_manifest(
        output / split_manifest.MANIFEST_FILE,
        split,
        seed=settings.seed,
        parameters=manifest_parameters(settings),
        data_root=None if settings.csv else settings.data,
    )
    return split


def run(settings: TrainSettings) -> dict[str, Any]:
    """Train, evaluate and export; returns the training summary and evaluation as a dict."""
    from trainer.training.pipeline import train_evaluate_export

    started = time.monotonic()
    output = settings.output
    output.mkdir(parents=True, exist_ok=True)
    split = _split(settings, output)
    training = settings.training_settings(
        output_dir=output,
        cache_dir=settings.cache_dir,
        seed=settings.seed,
        resume=not settings.no_resume,
    )
    return train_evaluate_export(
        split.parts, training, settings.cache_dir / "weights", started=started
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``landmark-train``."""
    settings = settings_from(argv)
    if settings.pooling != "average":
        print(
            f"error: --pooling {settings.pooling} is for measuring with the protocol "
            "(python -m trainer.cli.protocol): its export needs a custom layer that "
            "landmark-worker and landmark-load-gallery do not load",
            file=sys.stderr,
        )
        return 2
    try:
        report = run(settings)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    training = report["training"]
    print(
        f"trained {training['backbone']} on {training['landmarks']} landmarks, "
        f"{training['train_photos']} photos, {training['epochs_run']} epochs in "
        f"{training['total_seconds']}s; best val hit@1 {training['best_val_hit_at_1']} "
        f"(pretrained {training['pretrained_val_hit_at_1']}); model {report['model_version']} "
        f"in {settings.output / 'model'}"
    )
    for name, figures in report["evaluation"].items():
        if "hit_at_k" in figures:  # the others (vote_calibration) are in training-summary.json
            hits = figures["hit_at_k"].items()
            print(f"{name}: " + ", ".join(f"hit@{k} {v:.3f}" for k, v in hits))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
