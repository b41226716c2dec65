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

import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import BeforeValidator, Field
from pydantic_settings import NoDecode, SettingsConfigDict

from configuration import load_settings, setting
from configuration.base import none_from_text
from schemas.vote import Weighting
from trainer.cli.settings import CacheSettings
from trainer.evaluation.models import EvaluationSettings
from trainer.evaluation.report import evaluate
from trainer.weights.pretrained import PretrainedWeightsUnavailable

TABLE_KS = (1, 5, 10, 20, 50)
DESCRIPTION = (
    "hit@k (k=1..50) against random guessing, kNN-vote accuracy and GAP of embedding models on "
    "a folder of reference photos and a folder of query photos (<folder>/<landmark>/<photo>); "
    "writes metrics.json, hit_at_k.png, retrieval_grid.png."
)


def _shell_words(value: object) -> object:
    """``LANDMARK_EVAL_MODELS="a=x 'b=y z'"`` → ``("a=x", "b=y z")``; flags come as a list."""
    return tuple(shlex.split(value)) if isinstance(value, str) else value


#: Models to compare, in the order their curves are drawn.
ModelList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_shell_words), Field(min_length=1)]
OptionalInt = Annotated[int | None, BeforeValidator(none_from_text)]
OptionalFloat = Annotated[float | None, BeforeValidator(none_from_text)]


class EvaluateSettings(CacheSettings):
    """What ``landmark-evaluate`` measures; variables ``LANDMARK_EVAL_<SETTING>``."""

    model_config = SettingsConfigDict(env_prefix="LANDMARK_EVAL_")
    group_title: ClassVar[str] = "evaluation"

    models: ModelList = setting(
        flag="--model",
        nargs="+",
        help="export folders or pretrained:<backbone>, each optionally NAME=...; curves are "
        "drawn in this order (variable: space-separated, shell quoting)",
    )
    references: Path = setting(help="folder of landmark folders: the references")
    queries: Path = setting(help="folder of landmark folders: the queries")
    out: Path = setting(Path("runs/evaluate"), help="output folder")
    batch_size: int = setting(32, help="photos per forward pass")
    workers: int = setting(2, help="photo decoding threads")
    input_size: OptionalInt = setting(
        None,
        help="input size of pretrained:<backbone> models (default: that of an export of the "
        "same backbone, else the backbone's own)",
    )
    vote_k: OptionalInt = setting(
        None, help="neighbours that vote (default: the export's manifest, else 5)"
    )
    vote_weighting: Weighting | None = setting(
        None, help="vote weighting (default: the manifest's)"
    )
    vote_threshold: OptionalFloat = setting(
        None, help="confidence below which the answer is unknown (default: the manifest's)"
    )
    grid_queries: int = setting(6, help="queries in the retrieval grid")
    grid_neighbours: int = setting(5, help="references shown per query in the grid")
    seed: int = setting(0, help="seed of the grid's choice of queries")


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


def evaluation_settings(settings: EvaluateSettings) -> EvaluationSettings:
    """What :func:`trainer.evaluation.report.evaluate` takes, from the command's settings."""
    return EvaluationSettings(
        models=settings.models,
        references=settings.references,
        queries=settings.queries,
        out=settings.out,
        batch_size=settings.batch_size,
        workers=settings.workers,
        input_size=settings.input_size,
        cache_dir=settings.cache_dir,
        vote_k=settings.vote_k,
        vote_weighting=settings.vote_weighting,
        vote_threshold=settings.vote_threshold,
        grid_queries=settings.grid_queries,
        grid_neighbours=settings.grid_neighbours,
        seed=settings.seed,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``landmark-evaluate``."""
    settings = load_settings(
        EvaluateSettings, argv, prog="landmark-evaluate", description=DESCRIPTION
    )
    try:
        metrics = evaluate(evaluation_settings(settings))
    except (OSError, ValueError, PretrainedWeightsUnavailable) as error:
        print(f"landmark-evaluate: error: {error}", file=sys.stderr)
        return 1
    print(format_table(metrics))
    for name in ("references", "queries"):
        if metrics[name]["failures"]:
            print(
                f"{len(metrics[name]['failures'])} {name} could not be decoded (see metrics.json)"
            )
    print(f"wrote {settings.out / 'metrics.json'}, hit_at_k.png, retrieval_grid.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
