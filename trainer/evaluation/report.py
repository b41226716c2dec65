"""Evaluate embedding models on reference and query photos: the work behind ``landmark-evaluate``.

Takes the models and their embeddings of both photo sets (:mod:`trainer.evaluation.models`),
measures hit@k (:mod:`trainer.evaluation.retrieval`), the kNN vote and GAP
(:mod:`trainer.evaluation.recognition`), and draws the Figure-8 and Figure-9 style PNGs
(:mod:`trainer.evaluation.plots`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from schemas.preprocessing import PreprocessingSpec
from trainer.data.loading import load_photos
from trainer.data.photos import Photo, read_landmark_folders, summarize
from trainer.evaluation import recognition, retrieval
from trainer.evaluation.models import EvaluatedModel, EvaluationSettings, embed_sets, load_models
from trainer.evaluation.plots import RetrievalRow, plot_hit_at_k, plot_retrieval_grid

#: Photos in the retrieval grid are decoded at this size, whatever the model's input.
DISPLAY_SPEC = PreprocessingSpec(input_size=160)


def grid_queries(queries: Sequence[Photo], count: int, seed: int) -> list[int]:
    """Indices of ``count`` queries of different landmarks, chosen by a seeded hash."""

    def key(index: int) -> str:
        photo = queries[index]
        return hashlib.sha256(
            f"{seed}\x00{photo.landmark_id}\x00{photo.path.name}".encode()
        ).hexdigest()

    chosen: dict[str, int] = {}
    for index in sorted(range(len(queries)), key=key):
        chosen.setdefault(queries[index].landmark_id, index)
    return sorted(chosen.values(), key=key)[:count]


def draw_grid(
    model: EvaluatedModel,
    references: list[Photo],
    queries: list[Photo],
    chosen: list[int],
    neighbours: int,
    out_path: Path,
) -> None:
    indices, distances = retrieval.nearest_references(
        model.embeddings["queries"][chosen], model.embeddings["references"], neighbours
    )
    needed = sorted({*indices.ravel().tolist()})
    loaded = load_photos([references[i].path for i in needed], DISPLAY_SPEC)
    reference_images = dict(zip([needed[i] for i in loaded.ok_indices], loaded.images, strict=True))
    shown = load_photos([queries[i].path for i in chosen], DISPLAY_SPEC)
    query_images = dict(zip(shown.ok_indices, shown.images, strict=True))
    blank = np.full((DISPLAY_SPEC.input_size,) * 2 + (3,), 255, np.uint8)
    rows = []
    for row, query_index in enumerate(chosen):
        query = queries[query_index]
        hits = [references[i] for i in indices[row]]
        rows.append(
            RetrievalRow(
                query_image=query_images.get(row, blank),
                query_label=query.landmark_name,
                neighbour_images=[reference_images.get(i, blank) for i in indices[row]],
                neighbour_labels=[hit.landmark_name for hit in hits],
                neighbour_correct=[hit.landmark_id == query.landmark_id for hit in hits],
                neighbour_distances=distances[row].tolist(),
            )
        )
    plot_retrieval_grid(
        rows, out_path, title=f"{model.name}: queries and their {neighbours} nearest references"
    )


def measure(model: EvaluatedModel, references: list[Photo], queries: list[Photo]) -> dict[str, Any]:
    """hit@k, vote accuracy with its sweep, and GAP of one model."""
    q, r = model.embeddings["queries"], model.embeddings["references"]
    ref_labels = [p.landmark_id for p in references]
    query_labels = [p.landmark_id for p in queries]
    hits = retrieval.hit_at_k(q, query_labels, r, ref_labels)
    vote = recognition.vote_accuracy(
        q, query_labels, r, ref_labels, [p.landmark_name for p in references], model.vote
    )
    known = set(ref_labels)
    truths = [label if label in known else None for label in query_labels]
    gap = recognition.gap(vote.predictions, vote.confidences, truths) if any(truths) else None
    return {
        **model.description,
        "input_size": model.spec.input_size,
        "embed_seconds": round(model.embed_seconds, 2),
        "hit_at_k": {str(k): v for k, v in hits.items()},
        "vote": vote.to_dict(),
        "gap": gap,
    }


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "model"


def _present(
    folder: Path, photos: list[Photo], failures: list[tuple[Path, str, str]]
) -> dict[str, Any]:
    return {
        "folder": str(Path(folder).resolve()),
        "summary": summarize(photos).to_dict(),
        "failures": [{"path": str(p), "reason": why, "message": msg} for p, why, msg in failures],
    }


def evaluate(settings: EvaluationSettings) -> dict[str, Any]:
    """Evaluate the models on the reference and query folders.

    Writes ``metrics.json``, ``hit_at_k.png``, ``retrieval_grid.png`` and one
    ``retrieval_grid_<model>.png`` per model into ``settings.out``.

    Returns:
        The metrics written to ``metrics.json``.

    Raises:
        FileNotFoundError, ValueError: missing folders or exports, bad model names, or no
            photo left to evaluate.
        PretrainedWeightsUnavailable: a pretrained backbone's weights cannot be had offline.
    """
    out = Path(settings.out)
    all_references = read_landmark_folders(settings.references)
    all_queries = read_landmark_folders(settings.queries)
    models = load_models(settings)
    failures = embed_sets(
        models,
        {"references": all_references, "queries": all_queries},
        settings.batch_size,
        settings.workers,
    )
    failed = {name: {p for p, *_ in items} for name, items in failures.items()}
    references = [p for p in all_references if p.path not in failed["references"]]
    queries = [p for p in all_queries if p.path not in failed["queries"]]
    ks = retrieval.DEFAULT_KS
    metrics: dict[str, Any] = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "references": _present(settings.references, references, failures["references"]),
        "queries": _present(settings.queries, queries, failures["queries"]),
        "queries_without_references": sum(
            p.landmark_id not in {r.landmark_id for r in references} for p in queries
        ),
        "ks": list(ks),
        "random": {
            "hit_at_k": {
                str(k): v
                for k, v in retrieval.random_hit_at_k(
                    [p.landmark_id for p in references], [p.landmark_id for p in queries], ks
                ).items()
            }
        },
        "models": {model.name: measure(model, references, queries) for model in models},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n", encoding="utf-8")
    curves = {"random": metrics["random"]["hit_at_k"]} | {
        name: m["hit_at_k"] for name, m in metrics["models"].items()
    }
    plot_hit_at_k(
        {name: {int(k): v for k, v in c.items()} for name, c in curves.items()},
        out / "hit_at_k.png",
        subtitle=f"{len(queries)} queries, {len(references)} references, "
        f"{metrics['references']['summary']['landmarks']} landmarks",
    )
    chosen = grid_queries(queries, settings.grid_queries, settings.seed)
    if chosen and settings.grid_neighbours > 0:
        for model in models:
            draw_grid(
                model,
                references,
                queries,
                chosen,
                settings.grid_neighbours,
                out / f"retrieval_grid_{_slug(model.name)}.png",
            )
        last = out / f"retrieval_grid_{_slug(models[-1].name)}.png"
        (out / "retrieval_grid.png").write_bytes(last.read_bytes())
    return metrics
