"""The product's commands as the demo and ``bench/`` run them: one place for their flags."""

from __future__ import annotations

import sys
from pathlib import Path

#: The folder of this environment's console scripts (``landmark-train`` …).
BIN = Path(sys.executable).parent

Command = list[str | Path]


def split_command(data: Path, out: Path, *, query: float, references: int, cap: int) -> Command:
    """``python -m trainer.cli.split``: seed 0, every landmark trained, 10% validation."""
    return [
        *(sys.executable, "-m", "trainer.cli.split"),
        *("--data", data, "--out", out, "--seed", "0"),
        *("--hold-out-landmarks", "0", "--val", "0.1"),
        *("--query", str(query), "--references", str(references), "--cap", str(cap)),
    ]


def train_command(
    split: Path,
    data: Path,
    output: Path,
    *,
    input_size: int,
    epochs: int,
    augment_views: int,
    trainable_from: str,
) -> Command:
    """``landmark-train`` on a split made by :func:`split_command`, from scratch."""
    return [
        *(BIN / "landmark-train", "--split", split / "split.json"),
        *("--data", data, "--output", output, "--input-size", str(input_size)),
        *("--epochs", str(epochs), "--augment-views", str(augment_views)),
        *("--trainable-from", trainable_from, "--no-resume"),
    ]
