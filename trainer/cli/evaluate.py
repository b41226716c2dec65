"""``landmark-evaluate``: measure embedding models like the paper, and as the worker publishes.

Takes one or more models (exports from ``landmark-train``, or ``pretrained:<backbone>`` for the
ImageNet network with global pooling and L2 normalisation), a folder of reference photos and a
folder of query photos (both ``<folder>/<landmark>/<photo>``), and writes to ``--out``:

- ``metrics.json``: hit@k for k = 1…50 for random guessing (exact expectation) and every model;
  per model the kNN-vote accuracy at its threshold with a threshold sweep, and GAP;
- ``hit_at_k.png``: the curves (the paper's Figure 8);
- ``retrieval_grid.png`` (the last model) and ``retrieval_grid_<model>.png`` (each model): query
  photos beside their nearest references, framed green (right landmark) or red (the paper's
  Figure 9).

To evaluate on a split of ``../shared/data/landmarks``, make one with
``python -m trainer.cli.split`` and pass its ``reference`` and ``query`` folders (or
``heldout_reference``/``heldout_query``).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from schemas.vote import WEIGHTINGS
from trainer.evaluation.models import EvaluationSettings
from trainer.evaluation.report import evaluate
from trainer.weights.pretrained import PretrainedWeightsUnavailable

REPO_ROOT = Path(__file__).resolve().parents[2]
TABLE_KS = (1, 5, 10, 20, 50)


def format_table(metrics: dict[str, Any]) -> str:
    """hit@k for k = 1, 5, 10, 20, 50, then the vote and GAP of every model, as text."""
    width = max(14, *(len(name) for name in metrics["models"]))
    lines = [f"{'hit@k':<{width}} " + " ".join(f"{'k=' + str(k):>7}" for k in TABLE_KS)]
    rows = {"random": metrics["random"]} | metrics["models"]
    for name, row in rows.items():
        lines.append(
            f"{name:<{width}} "
            + " ".join(f"{100 * row['hit_at_k'][str(k)]:6.1f}%" for k in TABLE_KS)
        )
    lines.append("")
    lines.append(
        f"{'vote':<{width}}  settings                         accuracy unknown precision    GAP"
    )
    for name, row in metrics["models"].items():
        vote, s = row["vote"], row["vote"]["settings"]
        settings = f"k={s['k']} {s['weighting']} threshold={s['threshold']:.2f}"
        precision = (
            f"{100 * vote['precision']:7.1f}%" if vote["precision"] is not None else "      -"
        )
        gap = f"{row['gap']:.3f}" if row["gap"] is not None else "-"
        lines.append(
            f"{name:<{width}}  {settings:<32} {100 * vote['accuracy']:7.1f}% "
            f"{100 * vote['unknown_rate']:6.1f}% {precision} {gap:>6}"
        )
    return "\n".join(lines)


def _optional_int(text: str) -> int | None:
    return None if str(text).lower() in {"", "none"} else int(text)


def _optional_float(text: str) -> float | None:
    return None if str(text).lower() in {"", "none"} else float(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="landmark-evaluate",
        description="hit@k (k=1..50) against random guessing, kNN-vote accuracy and GAP of "
        "embedding models on a folder of reference photos and a folder of query photos "
        "(<folder>/<landmark>/<photo>); writes metrics.json, hit_at_k.png, retrieval_grid.png.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )

    def add(flag: str, env: str, default: Any, help_text: str, **kwargs: Any) -> None:
        parser.add_argument(
            flag, default=os.environ.get(env, default), help=f"{help_text} [env: {env}]", **kwargs
        )

    env_models = os.environ.get("LANDMARK_EVAL_MODELS")
    parser.add_argument(
        "--model",
        nargs="+",
        default=shlex.split(env_models) if env_models else None,
        help="export folders or pretrained:<backbone>, each optionally NAME=...; "
        "curves are drawn in this order [env: LANDMARK_EVAL_MODELS, space-separated]",
    )
    add(
        "--references",
        "LANDMARK_EVAL_REFERENCES",
        None,
        "folder of landmark folders: the references",
    )
    add("--queries", "LANDMARK_EVAL_QUERIES", None, "folder of landmark folders: the queries")
    add("--out", "LANDMARK_EVAL_OUT", "runs/evaluate", "output folder")
    add("--batch-size", "LANDMARK_EVAL_BATCH_SIZE", "32", "photos per forward pass", type=int)
    add("--workers", "LANDMARK_EVAL_WORKERS", "2", "photo decoding threads", type=int)
    add(
        "--input-size",
        "LANDMARK_EVAL_INPUT_SIZE",
        None,
        "input size of pretrained:<backbone> models (default: that of an export of the same "
        "backbone, else the backbone's own)",
        type=_optional_int,
    )
    add(
        "--cache-dir",
        "LANDMARK_CACHE_DIR",
        str(REPO_ROOT / ".cache"),
        "cache root of the pretrained weights",
    )
    add(
        "--vote-k",
        "LANDMARK_EVAL_VOTE_K",
        None,
        "neighbours that vote (default: the export's manifest, else 5)",
        type=_optional_int,
    )
    add(
        "--vote-weighting",
        "LANDMARK_EVAL_VOTE_WEIGHTING",
        None,
        f"vote weighting, one of {', '.join(WEIGHTINGS)} (default: the manifest's)",
        choices=WEIGHTINGS,
    )
    add(
        "--vote-threshold",
        "LANDMARK_EVAL_VOTE_THRESHOLD",
        None,
        "confidence below which the answer is unknown (default: the manifest's)",
        type=_optional_float,
    )
    add(
        "--grid-queries",
        "LANDMARK_EVAL_GRID_QUERIES",
        "6",
        "queries in the retrieval grid",
        type=int,
    )
    add(
        "--grid-neighbours",
        "LANDMARK_EVAL_GRID_NEIGHBOURS",
        "5",
        "references shown per query in the grid",
        type=int,
    )
    add("--seed", "LANDMARK_EVAL_SEED", "0", "seed of the grid's choice of queries", type=int)
    return parser


def settings_from(args: argparse.Namespace) -> EvaluationSettings:
    """The evaluation settings from parsed flags."""
    return EvaluationSettings(
        models=tuple(args.model),
        references=Path(args.references),
        queries=Path(args.queries),
        out=Path(args.out),
        batch_size=args.batch_size,
        workers=args.workers,
        input_size=args.input_size,
        cache_dir=Path(args.cache_dir) if args.cache_dir else None,
        vote_k=args.vote_k,
        vote_weighting=args.vote_weighting,
        vote_threshold=args.vote_threshold,
        grid_queries=args.grid_queries,
        grid_neighbours=args.grid_neighbours,
        seed=args.seed,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``landmark-evaluate``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    missing = [
        flag
        for flag, value in (
            ("--model", args.model),
            ("--references", args.references),
            ("--queries", args.queries),
        )
        if not value
    ]
    if missing:
        parser.error(f"missing {', '.join(missing)} (or their environment variables)")
    try:
        metrics = evaluate(settings_from(args))
    except (OSError, ValueError, PretrainedWeightsUnavailable) as error:
        print(f"landmark-evaluate: error: {error}", file=sys.stderr)
        return 1
    print(format_table(metrics))
    for name in ("references", "queries"):
        if metrics[name]["failures"]:
            print(
                f"{len(metrics[name]['failures'])} {name} could not be decoded (see metrics.json)"
            )
    print(f"wrote {Path(args.out) / 'metrics.json'}, hit_at_k.png, retrieval_grid.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
