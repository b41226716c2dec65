"""Tests for trainer.evaluation.plots: the hit@k figure and the retrieval grid PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainer.evaluation.plots import RetrievalRow, plot_hit_at_k, plot_retrieval_grid

GREY = np.full((40, 40, 3), 128, np.uint8)


def curve(top1: float) -> dict[int, float]:
    return {k: min(1.0, top1 + 0.01 * k) for k in range(1, 51)}


def colour_pixels(path: Path, rgb: tuple[int, int, int]) -> int:
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return int(np.sum(np.all(np.abs(pixels - rgb) <= 12, axis=-1)))


def row(correct: list[bool]) -> RetrievalRow:
    return RetrievalRow(
        query_image=GREY,
        query_label="tower",
        neighbour_images=[GREY] * len(correct),
        neighbour_labels=["tower" if ok else "bridge" for ok in correct],
        neighbour_correct=correct,
        neighbour_distances=[0.1 * (i + 1) for i in range(len(correct))],
    )


def test_plot_hit_at_k_writes_a_png(tmp_path: Path) -> None:
    path = plot_hit_at_k({"random": curve(0.02), "fine-tuned": curve(0.5)}, tmp_path / "h.png")
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (900, 600)


def test_plot_hit_at_k_rejects_no_curves(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no curves"):
        plot_hit_at_k({}, tmp_path / "h.png")


def test_retrieval_grid_frames_right_references_green_and_wrong_red(tmp_path: Path) -> None:
    path = plot_retrieval_grid([row([True, False])], tmp_path / "g.png")
    assert colour_pixels(path, (0x1A, 0x96, 0x41)) > 100
    assert colour_pixels(path, (0xD7, 0x19, 0x1C)) > 100


def test_retrieval_grid_has_no_red_when_every_reference_is_right(tmp_path: Path) -> None:
    path = plot_retrieval_grid([row([True, True])], tmp_path / "g.png")
    assert colour_pixels(path, (0xD7, 0x19, 0x1C)) == 0


def test_retrieval_grid_rejects_rows_whose_lists_disagree(tmp_path: Path) -> None:
    bad = RetrievalRow(GREY, "tower", [GREY], ["tower", "x"], [True], [0.1])
    with pytest.raises(ValueError, match="differ in length"):
        plot_retrieval_grid([bad], tmp_path / "g.png")
