"""``landmark-train``: fine-tune the triplet embedding network and export it.

Reads a folder of landmark folders (or a Google-Landmarks CSV), makes the seeded split (or reads
a ``split.json`` from ``python -m trainer.cli.split``), fine-tunes the upper stages on cached frozen
activations, evaluates hit@k on the split's query/reference parts, and exports ``model.keras`` +
``manifest.json`` into ``<output>/model``. Every flag has an environment variable.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]


def _env(name: str, default: Any) -> Any:
    return os.environ.get(name, default)


def _optional_int(text: str) -> int | None:
    return None if str(text).lower() in {"", "none", "0"} else int(text)


def _optional_str(text: str) -> str | None:
    return None if str(text).lower() in {"", "none"} else str(text)


def _number(text: str) -> float | int:
    return int(text) if str(text).isdigit() else float(text)


#: First trainable stage measured best per backbone (docs/results); others use the backbone's own.
MEASURED_TRAINABLE_FROM = {"mobilenet_v2": "block_15"}


def _auto_trainable_from(backbone: str) -> str:
    from trainer.backbones import BACKBONES

    if backbone in MEASURED_TRAINABLE_FROM:
        return MEASURED_TRAINABLE_FROM[backbone]
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; known: {sorted(BACKBONES)}")
    return BACKBONES[backbone].default_trainable_from


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="landmark-train",
        description="Fine-tune a triplet embedding network on landmark photos and export it.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )

    def add(flag: str, env: str, default: Any, help_text: str, **kwargs: Any) -> None:
        parser.add_argument(
            flag, default=_env(env, default), help=f"{help_text} [env: {env}]", **kwargs
        )

    add(
        "--data",
        "LANDMARK_DATA_DIR",
        str(REPO_ROOT.parent / "shared/data/landmarks"),
        "folder of landmark folders, or the images root of --csv",
    )
    add(
        "--csv",
        "LANDMARK_TRAIN_CSV",
        None,
        "Google-Landmarks id,url,landmark_id CSV (photos under --data)",
    )
    add(
        "--split",
        "LANDMARK_SPLIT",
        None,
        "existing split.json (from python -m trainer.cli.split); overrides the split flags",
    )
    add(
        "--cap",
        "LANDMARK_CAP",
        None,
        "at most this many photos a landmark (the paper's cap)",
        type=_optional_int,
    )
    add(
        "--hold-out-landmarks",
        "LANDMARK_HOLD_OUT",
        "0.25",
        "landmarks held out of training (count or fraction; 0: none)",
        type=_number,
    )
    add(
        "--val",
        "LANDMARK_VAL",
        "0.1",
        "validation photos a trained landmark (count or fraction)",
        type=_number,
    )
    add(
        "--query",
        "LANDMARK_QUERY",
        "0.2",
        "query photos a trained landmark (count or fraction)",
        type=_number,
    )
    add("--references", "LANDMARK_REFERENCES", "3", "reference photos a trained landmark", type=int)
    add(
        "--heldout-references",
        "LANDMARK_HELDOUT_REFERENCES",
        "3",
        "reference photos a held-out landmark",
        type=int,
    )
    add("--backbone", "LANDMARK_BACKBONE", "mobilenet_v2", "backbone name")
    add("--weights", "LANDMARK_WEIGHTS", "imagenet", "imagenet or none", type=_optional_str)
    add("--input-size", "LANDMARK_INPUT_SIZE", "160", "side of the square input", type=int)
    add(
        "--trainable-from",
        "LANDMARK_TRAINABLE_FROM",
        "auto",
        "first trainable stage (none: all frozen; auto: block_15 for mobilenet_v2, "
        "else the backbone's default)",
        type=_optional_str,
    )
    add(
        "--embedding-dim",
        "LANDMARK_EMBEDDING_DIM",
        "0",
        "Dense projection size (0: none)",
        type=_optional_int,
    )
    add(
        "--mining",
        "LANDMARK_MINING",
        "random",
        "random (the paper's; best on unseen landmarks here), batch_hard or batch_semi_hard",
        choices=("random", "batch_hard", "batch_semi_hard"),
    )
    add("--margin", "LANDMARK_MARGIN", "0.1", "triplet margin alpha", type=float)
    add("--p", "LANDMARK_P", "8", "landmarks per batch", type=int)
    add("--k", "LANDMARK_K", "4", "photos per landmark in a batch", type=int)
    add("--epochs", "LANDMARK_EPOCHS", "12", "most epochs", type=int)
    add("--lr", "LANDMARK_LR", "1e-4", "Adam learning rate", type=float)
    add("--patience", "LANDMARK_PATIENCE", "3", "early stopping patience (epochs)", type=int)
    add(
        "--augment-views",
        "LANDMARK_AUGMENT_VIEWS",
        "4",
        "augmented views cached per photo",
        type=int,
    )
    add("--seed", "LANDMARK_SEED", "0", "seed of split, batches and augmentation", type=int)
    add(
        "--output",
        "LANDMARK_OUTPUT",
        "runs/train",
        "output folder (checkpoints, split.json, model/)",
    )
    add(
        "--cache-dir",
        "LANDMARK_CACHE_DIR",
        str(REPO_ROOT / ".cache"),
        "cache folder (weights, activations)",
    )
    add("--workers", "LANDMARK_WORKERS", "2", "photo decoding threads", type=int)
    add(
        "--batch-size",
        "LANDMARK_CACHE_BATCH",
        "32",
        "photos per forward pass when caching",
        type=int,
    )
    parser.add_argument(
        "--no-resume",
        action="store_true",
        default=_env("LANDMARK_NO_RESUME", "") == "1",
        help="start over even if a checkpoint exists [env: LANDMARK_NO_RESUME=1]",
    )
    return parser


def _split(args: argparse.Namespace, output: Path) -> Any:
    from trainer.data.photos import (
        cap_per_landmark,
        read_google_landmarks_csv,
        read_landmark_folders,
    )
    from trainer.splits import manifest as split_manifest
    from trainer.splits.seeded import standard_split

    if args.split:
        return split_manifest.read_manifest(args.split)
    if args.csv:
        listing = read_google_landmarks_csv(args.csv, args.data)
        photos = listing.photos
        if listing.missing:
            print(f"{len(listing.missing)} CSV rows have no photo on disk", file=sys.stderr)
    else:
        photos = read_landmark_folders(args.data)
    if args.cap:
        photos = cap_per_landmark(photos, args.cap, args.seed)
    split = standard_split(
        photos,
        seed=args.seed,
        hold_out=args.hold_out_landmarks or None,
        query=args.query,
        val=args.val or None,
        references=args.references,
        heldout_references=args.heldout_references,
    )
    parameters = {
        k: v
        for k, v in vars(args).items()
        if k
        in {"cap", "hold_out_landmarks", "val", "query", "references", "heldout_references", "csv"}
    }
    split_manifest.write_manifest(
        output / split_manifest.MANIFEST_FILE,
        split,
        seed=args.seed,
        parameters=parameters,
        data_root=None if args.csv else args.data,
    )
    return split


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train, evaluate and export; returns the training summary and evaluation as a dict."""
    from trainer.model.embedding import EmbeddingModelConfig
    from trainer.training.activation_cache import ActivationCacheSettings
    from trainer.training.pipeline import train_evaluate_export
    from trainer.training.run import TrainingSettings

    started = time.monotonic()
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    split = _split(args, output)
    cache_dir = Path(args.cache_dir)
    if args.trainable_from == "auto":
        args.trainable_from = _auto_trainable_from(args.backbone)
    config = EmbeddingModelConfig(
        args.backbone, args.input_size, args.embedding_dim, args.trainable_from, seed=args.seed
    )
    settings = TrainingSettings(
        model=config,
        output_dir=output,
        weights=args.weights,
        mining=args.mining,
        margin=args.margin,
        p=args.p,
        k=args.k,
        epochs=args.epochs,
        learning_rate=args.lr,
        patience=args.patience,
        seed=args.seed,
        resume=not args.no_resume,
        cache=ActivationCacheSettings(
            cache_dir=cache_dir / "activations",
            augmented_views=args.augment_views,
            augmentation_seed=args.seed,
            batch_size=args.batch_size,
            workers=args.workers,
        ),
    )
    return train_evaluate_export(split.parts, settings, cache_dir / "weights", started=started)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = run(args)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    training = report["training"]
    print(
        f"trained {training['backbone']} on {training['landmarks']} landmarks, "
        f"{training['train_photos']} photos, {training['epochs_run']} epochs in "
        f"{training['total_seconds']}s; best val hit@1 {training['best_val_hit_at_1']} "
        f"(pretrained {training['pretrained_val_hit_at_1']}); model {report['model_version']} "
        f"in {Path(args.output) / 'model'}"
    )
    for name, figures in report["evaluation"].items():
        print(f"{name}: " + ", ".join(f"hit@{k} {v:.3f}" for k, v in figures["hit_at_k"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
