"""The protocol's report: per-fold and pooled figures as JSON, and the same as markdown tables.

Pooled figures concatenate the queries of all folds run (query-weighted); each fold's margin-rule
threshold is the one calibrated on that fold's validation photos.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.protocol.scoring import LEGACY_RULE, MARGIN_RULE, QueryOutcomes, group_figures

if TYPE_CHECKING:
    from trainer.protocol.run import FoldResult

#: The networks a run may score, in the order of the tables (the whitened ones with --whitening).
NETWORKS = ("pretrained", "pretrained_whitened", "fine_tuned", "fine_tuned_whitened")

GROUPS = ("trained", "unseen")
GROUP_TITLES = {
    "trained": "new photos of trained landmarks",
    "unseen": "landmarks of an unseen source",
}
TRAINING_KEYS = (
    "landmarks",
    "train_photos",
    "val_photos",
    "epochs_run",
    "best_epoch",
    "pretrained_val_hit_at_1",
    "best_val_hit_at_1",
    "cache_seconds",
    "train_seconds",
)


def _scored(results: Sequence[FoldResult]) -> list[str]:
    """The networks the results score: those of :data:`NETWORKS` first, then the expanded ones."""
    return _in_order(results[0].networks) if results else []


def _in_order(scored: Sequence[str] | dict[str, Any]) -> list[str]:
    return [n for n in NETWORKS if n in scored] + [n for n in scored if n not in NETWORKS]


def pooled_figures(results: Sequence[FoldResult], ks: Sequence[int]) -> dict[str, Any]:
    """network → group → figures over the queries of every fold."""
    pooled: dict[str, Any] = {}
    for network in _scored(results):
        pooled[network] = {}
        for group in GROUPS:
            parts: list[QueryOutcomes] = [
                r.networks[network].groups[group]
                for r in results
                if group in r.networks[network].groups
            ]
            if parts:
                pooled[network][group] = group_figures(QueryOutcomes.concatenate(parts), ks)
    return pooled


def fold_figures(result: FoldResult, ks: Sequence[int]) -> dict[str, Any]:
    """One fold's counts, training summary, calibrations and figures."""
    networks = {}
    for network in _in_order(result.networks):
        scores = result.networks[network]
        networks[network] = {
            "calibration": None if scores.calibration is None else scores.calibration.to_dict(),
            "calibration_holdout": list(scores.holdout),
            "groups": {g: group_figures(o, ks) for g, o in scores.groups.items()},
        }
    return {
        "held_out": result.fold.held_out,
        "counts": result.fold.counts(),
        "unseen_landmarks": list(result.fold.unseen_landmarks),
        "seconds": result.seconds,
        "training": {key: result.training.get(key) for key in TRAINING_KEYS},
        "networks": networks,
    }


def protocol_report(
    results: Sequence[FoldResult], parameters: dict[str, Any], ks: Sequence[int]
) -> dict[str, Any]:
    """The whole report: parameters, rules, pooled figures, folds."""
    return {
        "parameters": parameters,
        "rules": {"margin": MARGIN_RULE.to_dict(), "legacy": LEGACY_RULE.to_dict()},
        "pooled": pooled_figures(results, ks),
        "folds": [fold_figures(result, ks) for result in results],
    }


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _margin_row(label: str, figures: dict[str, Any], ks: Sequence[int]) -> str:
    margin = figures["margin"]
    cells = [
        label,
        str(figures["queries"]),
        *(_number(figures["hit_at_k"][str(k)]) for k in ks),
        _number(margin["accuracy"]),
        _number(margin["precision"]),
        _number(margin["unknown_rate"]),
        _number(margin["gap"]),
    ]
    return "| " + " | ".join(cells) + " |"


def _legacy_row(label: str, figures: dict[str, Any]) -> str:
    legacy = figures["legacy"]
    cells = [
        label,
        *(_number(legacy[key]) for key in ("accuracy", "precision", "unknown_rate", "gap")),
    ]
    return "| " + " | ".join(cells) + " |"


def _margin_header(first: str, ks: Sequence[int]) -> list[str]:
    columns = [
        first,
        "queries",
        *(f"hit@{k}" for k in ks),
        "vote acc.",
        "precision",
        "unknown",
        "GAP",
    ]
    return ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]


def _pooled_rows(pooled: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(row label, figures) of the pooled groups, trained landmarks first."""
    for group in GROUPS:
        for network in pooled:
            if group in pooled[network]:
                label = f"{network.replace('_', '-')} · {GROUP_TITLES[group]}"
                yield label, pooled[network][group]


def _fold_counts_table(folds: Sequence[dict[str, Any]]) -> list[str]:
    lines = [
        "| fold | trained / unseen landmarks | gallery | train | val | queries trained / unseen "
        "| thresholds (networks in table order) | epochs (best) | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for fold in folds:
        counts, training = fold["counts"], fold["training"]
        thresholds = [
            _number((scores["calibration"] or {}).get("threshold"))
            for scores in fold["networks"].values()
        ]
        lines.append(
            f"| {fold['held_out']} | {counts['trained_landmarks']} / {counts['unseen_landmarks']} "
            f"| {counts['gallery']} | {counts['train']} | {counts['val']} "
            f"| {counts['trained_queries']} / {counts['unseen_queries']} "
            f"| {' / '.join(thresholds)} | {training['epochs_run']} ({training['best_epoch']}) "
            f"| {fold['seconds']} |"
        )
    return lines


def markdown_tables(report: dict[str, Any], ks: Sequence[int]) -> str:
    """The pooled and per-fold tables as markdown."""
    pooled = report["pooled"]
    target = report["parameters"].get("target_precision")
    lines = [
        "Pooled over the folds (queries concatenated). Vote = margin rule "
        f"(k = {MARGIN_RULE.k}) at each fold's threshold calibrated on its validation photos "
        f"for precision {target}.",
        "",
        *_margin_header("network · queries", ks),
        *(_margin_row(label, figures, ks) for label, figures in _pooled_rows(pooled)),
        "",
        f"Legacy vote (weighted kNN, k = {LEGACY_RULE.k}, similarity weights, threshold "
        f"{LEGACY_RULE.threshold}), same queries:",
        "",
        "| network · queries | vote acc. | precision | unknown | GAP |",
        "| --- | --- | --- | --- | --- |",
        *(_legacy_row(label, figures) for label, figures in _pooled_rows(pooled)),
        "",
        "Per fold (held-out source):",
        "",
        *_margin_header("fold · network · queries", ks),
    ]
    for fold in report["folds"]:
        for network in fold["networks"]:
            for group, figures in fold["networks"][network]["groups"].items():
                label = f"{fold['held_out']} · {network.replace('_', '-')} · {group}"
                lines.append(_margin_row(label, figures, ks))
    lines += ["", *_fold_counts_table(report["folds"])]
    return "\n".join(lines) + "\n"


def write_report(out: Path, report: dict[str, Any], ks: Sequence[int]) -> tuple[Path, Path]:
    """Write ``<out>.json`` and ``<out>.md`` (a ``.json`` or ``.md`` suffix of ``out`` is
    dropped first); returns both paths."""
    if out.suffix in {".json", ".md"}:
        out = out.with_suffix("")
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path, markdown_path = out.parent / f"{out.name}.json", out.parent / f"{out.name}.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    markdown_path.write_text(markdown_tables(report, ks), encoding="utf-8")
    return json_path, markdown_path
