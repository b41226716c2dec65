"""PNG figures in the style of the paper: hit@k curves (Figure 8) and a retrieval grid (Figure 9).

matplotlib runs on its non-interactive Agg canvas, so this works on a server without a display.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

RIGHT_COLOUR = "#1a9641"
WRONG_COLOUR = "#d7191c"
_RANDOM_STYLE: dict[str, Any] = {"color": "0.45", "linestyle": "--"}


def plot_hit_at_k(
    curves: Mapping[str, Mapping[int, float]],
    out_path: Path | str,
    *,
    title: str = "hit@k: true landmark among the labels of the k nearest references",
    subtitle: str | None = None,
) -> Path:
    """Draw hit@k against k, one line per named curve (like the paper's Figure 8).

    A curve whose name starts with ``random`` is drawn dashed grey, as the baseline.

    Args:
        curves: name → (k → hit rate in [0, 1]); e.g. ``{"random": …, "pretrained": …,
            "fine-tuned": …}``.
        out_path: the PNG to write.
        title: the figure title.
        subtitle: a second title line (e.g. the split and the number of queries).

    Returns:
        The path written.

    Raises:
        ValueError: no curves, or a curve without points.
    """
    if not curves:
        raise ValueError("no curves to plot")
    figure = Figure(figsize=(7.5, 5.0), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for name, curve in curves.items():
        if not curve:
            raise ValueError(f"curve {name!r} has no points")
        ks = sorted(curve)
        values = [100.0 * curve[k] for k in ks]
        style: dict[str, Any] = _RANDOM_STYLE if name.lower().startswith("random") else {}
        axes.plot(ks, values, label=f"{name} (top-1 {values[0]:.1f}%)", linewidth=2, **style)
    axes.set_xlabel("k (nearest references)")
    axes.set_ylabel("hit@k (% of queries)")
    axes.set_ylim(0, 100)
    axes.set_xlim(left=1)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="lower right")
    axes.set_title(title if subtitle is None else f"{title}\n{subtitle}", fontsize=10)
    figure.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_path)
    return out_path


@dataclass(frozen=True)
class RetrievalRow:
    """One query of the retrieval grid and its nearest references, nearest first.

    Attributes:
        query_image: ``uint8`` RGB ``(h, w, 3)``.
        query_label: the query's landmark name (shown above it).
        neighbour_images: ``uint8`` RGB images of its nearest references.
        neighbour_labels: their landmark names.
        neighbour_correct: whether each reference shows the query's landmark.
        neighbour_distances: squared Euclidean distances (shown under each reference).
    """

    query_image: np.ndarray
    query_label: str
    neighbour_images: Sequence[np.ndarray]
    neighbour_labels: Sequence[str]
    neighbour_correct: Sequence[bool]
    neighbour_distances: Sequence[float]


def _show(
    axes: object, image: np.ndarray, caption: str, frame: str | None, below: str = ""
) -> None:
    axes.imshow(image)  # type: ignore[attr-defined]
    axes.set_xticks([])  # type: ignore[attr-defined]
    axes.set_yticks([])  # type: ignore[attr-defined]
    axes.set_title(caption, fontsize=7)  # type: ignore[attr-defined]
    if below:
        axes.set_xlabel(below, fontsize=7)  # type: ignore[attr-defined]
    for spine in axes.spines.values():  # type: ignore[attr-defined]
        spine.set_visible(frame is not None)
        if frame is not None:
            spine.set_edgecolor(frame)
            spine.set_linewidth(4)


def plot_retrieval_grid(
    rows: Sequence[RetrievalRow], out_path: Path | str, *, title: str | None = None
) -> Path:
    """Draw each query beside its nearest references (like the paper's Figure 9): a green
    frame marks a reference of the query's landmark, a red frame another landmark.

    Returns:
        The path written.

    Raises:
        ValueError: no rows, or a row whose lists disagree in length.
    """
    if not rows:
        raise ValueError("no queries to show")
    columns = max(len(row.neighbour_images) for row in rows)
    for row in rows:
        lengths = {
            len(row.neighbour_images),
            len(row.neighbour_labels),
            len(row.neighbour_correct),
            len(row.neighbour_distances),
        }
        if len(lengths) != 1:
            raise ValueError(f"query {row.query_label!r}: neighbour lists differ in length")
    figure = Figure(figsize=(1.6 * (columns + 1), 1.85 * len(rows) + 0.4), dpi=110)
    FigureCanvasAgg(figure)
    grid = figure.subplots(len(rows), columns + 1, squeeze=False)
    for r, row in enumerate(rows):
        _show(grid[r][0], row.query_image, f"query:\n{_short(row.query_label)}", "black")
        for c in range(columns):
            axes = grid[r][c + 1]
            if c >= len(row.neighbour_images):
                axes.set_axis_off()
                continue
            frame = RIGHT_COLOUR if row.neighbour_correct[c] else WRONG_COLOUR
            caption = f"{c + 1}. {_short(row.neighbour_labels[c])}"
            _show(
                axes, row.neighbour_images[c], caption, frame, f"d={row.neighbour_distances[c]:.3f}"
            )
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_path)
    return out_path


def _short(label: str, limit: int = 22) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"
