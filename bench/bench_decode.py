"""Benchmark photo decoding: CPU time a photo of the product's Pillow path against other decoders.

Every decoder turns the same encoded JPEG into the model's input (centre crop, the mode every
manifest uses) at input sizes 160, 224 and 288, doing what the product path does around it
(JPEG structure check, EXIF orientation, grey-fill check, DCT-domain downscaling chosen as
``Image.draft`` chooses it, LANCZOS resize), so that only the swapped part differs:

- ``pillow``: :func:`schemas.preprocessing.decode_photo` itself, the reference for the pixel
  differences; ``pillow, refuse_blank``: the same as the worker calls it (blank check included).
- ``pillow, nearest (no filter: the floor)``: the product path with nearest-neighbour sampling,
  i.e. everything but the resize filter's work (JPEG decoding, checks, crop): the least any
  resampling filter can cost.
- ``pillow, reducing_gap=2`` / ``reducing_gap=1`` (an ``Image.reduce`` box filter first, down to
  2x / 1x the input, then LANCZOS) and ``pillow, draft to 1x`` (DCT scaling down to 1x the input
  instead of 2x): cheaper resampling or decoding, different pixels.
- ``simplejpeg`` (PyPI, libjpeg-turbo in the wheel): the same DCT scaling, to an RGB array then
  into Pillow for the resize; ``rgbx`` decodes straight into the buffer the Pillow image uses (no
  copy); ``fast`` adds ``fastdct`` and ``fastupsample``.
- ``turbojpeg`` (PyTurboJPEG 1.x, needs the system's libturbojpeg, Debian ``libturbojpeg0``;
  PyTurboJPEG 2.x needs libjpeg-turbo 3, which Debian 12 does not have).

Neither package is a dependency of the project: ``.venv/bin/pip install simplejpeg
'PyTurboJPEG<2'`` (and ``apt-get install libturbojpeg0``) to include them.

CPU time is ``time.process_time`` in one thread, the decoders interleaved photo by photo so that
a change of load on a shared machine falls on all of them alike. Pixel differences are absolute
differences of the ``uint8`` outputs against ``pillow`` (max over all photos, mean over all
pixels, of the photos ``pillow`` accepts); ``refused`` counts the photos a decoder refuses at each
size (two shared photos have libjpeg's grey fill baked in): every decoder should refuse the same.
A decoder whose package is missing is left out. Timings only; nothing is asserted.

    .venv/bin/python bench/bench_decode.py                      # 300 shared photos, 40 camera-size
    .venv/bin/python bench/bench_decode.py --shared 1000 --fullsize 80
    .venv/bin/python bench/bench_decode.py --sizes 224 --decoders pillow,simplejpeg
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

import schemas.preprocessing as preprocessing
from schemas.colour_mode import to_rgb
from schemas.errors import InputError
from schemas.photo_format import detect_format
from schemas.photo_integrity import check_jpeg_structure, check_no_grey_fill
from schemas.preprocessing import PreprocessingSpec, decode_photo

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LANDMARK_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
SIZES = (160, 224, 288)

Decoder = Callable[[bytes, PreprocessingSpec], np.ndarray]


class Measured(NamedTuple):
    cpu_ms: float  # CPU milliseconds a photo
    max_diff: int  # largest absolute difference from pillow's pixels, over all photos
    mean_diff: float  # mean absolute difference over all pixels of all photos
    refused: int  # photos refused (InputError)


Results = dict[tuple[str, int], Measured]
#: Decodes a JPEG (already opened by Pillow, header read) at 1/scale size to an RGB Pillow image.
JpegStep = Callable[[bytes, Image.Image, int], Image.Image]


def draft_scale(size: tuple[int, int], spec: PreprocessingSpec, factor: int) -> int:
    """The DCT scaling denominator ``Image.draft`` picks in the product path (1, 2, 4 or 8)."""
    draft_side = factor * spec.input_size
    if min(size) < 2 * draft_side:
        return 1
    fits = min(size[0] // draft_side, size[1] // draft_side)
    return next(s for s in (8, 4, 2, 1) if fits >= s)


def pillow_step(data: bytes, image: Image.Image, scale: int) -> Image.Image:
    if scale > 1:
        width, height = image.size
        image.draft("RGB", (width // scale, height // scale))
    image.load()
    return to_rgb(image)


def _scaled(size: tuple[int, int], scale: int) -> dict[str, int]:
    # min_factor rules out libjpeg-turbo's other factors (3/8, 5/8, ...): exactly 1/scale.
    width, height = size
    return {"min_width": -(-width // scale), "min_height": -(-height // scale), "min_factor": scale}


def simplejpeg_step(fast: bool = False, rgbx: bool = False) -> JpegStep:
    import simplejpeg

    def step(data: bytes, image: Image.Image, scale: int) -> Image.Image:
        if image.mode not in ("RGB", "L"):
            return pillow_step(data, image, scale)
        pixels = simplejpeg.decode_jpeg(
            data,
            "RGBX" if rgbx else "RGB",
            fastdct=fast,
            fastupsample=fast,
            strict=False,  # warnings only, as Pillow ignores them
            **_scaled(image.size, scale),
        )
        height, width = pixels.shape[:2]
        if rgbx:  # Pillow keeps RGB as 4 bytes a pixel: use the decoded buffer as is
            return Image.frombuffer("RGBX", (width, height), pixels, "raw", "RGBX", 0, 1)
        return Image.fromarray(pixels)

    return step


def turbojpeg_step() -> JpegStep:
    from turbojpeg import TJPF_RGB, TurboJPEG

    turbo = TurboJPEG()

    def step(data: bytes, image: Image.Image, scale: int) -> Image.Image:
        if image.mode not in ("RGB", "L"):
            return pillow_step(data, image, scale)
        factor = (1, scale) if scale > 1 else None
        return Image.fromarray(turbo.decode(data, pixel_format=TJPF_RGB, scaling_factor=factor))

    return step


def pipeline(
    step: JpegStep,
    reducing_gap: float | None = preprocessing.REDUCING_GAP,
    draft_factor: int = preprocessing.DRAFT_SIDE_FACTOR,
    resample: Image.Resampling = preprocessing.RESAMPLE,
) -> Decoder:
    """The product path for a JPEG with centre crop, its decoding step and resampling swapped."""

    def decode(data: bytes, spec: PreprocessingSpec) -> np.ndarray:
        if detect_format(data) != "jpeg":
            return decode_photo(data, spec)
        check_jpeg_structure(data)
        with Image.open(io.BytesIO(data), formats=("JPEG", "MPO")) as image:
            coded_size = image.size
            orientation = preprocessing._orientation(image)
            rgb = step(data, image, draft_scale(coded_size, spec, draft_factor))
        check_no_grey_fill(rgb, coded_size)
        width, height = rgb.size
        side = min(width, height)
        left, top = (width - side) / 2.0, (height - side) / 2.0
        square = rgb.resize(
            (spec.input_size, spec.input_size),
            resample,
            box=(left, top, left + side, top + side),
            reducing_gap=reducing_gap,
        )
        transpose = preprocessing._ORIENTATION_TRANSPOSE.get(orientation)
        out = square if transpose is None else square.transpose(transpose)
        return np.asarray(out.convert("RGB") if out.mode != "RGB" else out)

    return decode


def decoders() -> dict[str, Decoder]:
    found: dict[str, Decoder] = {
        "pillow": decode_photo,
        "pillow, refuse_blank": lambda data, spec: decode_photo(data, spec, refuse_blank=True),
        "pillow, reducing_gap=2": pipeline(pillow_step, reducing_gap=2.0),
        "pillow, reducing_gap=1": pipeline(pillow_step, reducing_gap=1.0),
        "pillow, draft to 1x": pipeline(pillow_step, draft_factor=1),
        # Every step of the product path but the filter's work: what decoding costs at the least.
        "pillow, nearest (no filter: the floor)": pipeline(
            pillow_step, resample=Image.Resampling.NEAREST
        ),
    }
    if importlib.util.find_spec("simplejpeg"):
        found["simplejpeg"] = pipeline(simplejpeg_step())
        found["simplejpeg, rgbx"] = pipeline(simplejpeg_step(rgbx=True))
        found["simplejpeg, rgbx, fast"] = pipeline(simplejpeg_step(fast=True, rgbx=True))
    if importlib.util.find_spec("turbojpeg"):
        try:
            found["turbojpeg"] = pipeline(turbojpeg_step())
        except (OSError, RuntimeError) as error:  # no libturbojpeg, or one of the wrong version
            print(f"turbojpeg left out: {error}".splitlines()[0], file=sys.stderr)
    return found


def measure(photos: Sequence[bytes], chosen: dict[str, Decoder], sizes: Sequence[int]) -> Results:
    """(decoder, size) → CPU ms a photo, max and mean abs difference vs pillow, photos refused."""
    out: Results = {}
    for size in sizes:
        spec = PreprocessingSpec(input_size=size)
        for decode in chosen.values():  # warm-up: imports, first calls
            with contextlib.suppress(InputError):
                decode(photos[0], spec)
        cpu = dict.fromkeys(chosen, 0.0)
        worst, total, refused = (
            dict.fromkeys(chosen, 0),
            dict.fromkeys(chosen, 0),
            dict.fromkeys(chosen, 0),
        )
        compared = 0
        for data in photos:
            reference: np.ndarray | None = None
            for name, decode in chosen.items():
                started = time.process_time()
                try:
                    pixels: np.ndarray | None = decode(data, spec)
                except InputError:  # e.g. a photo with libjpeg's grey fill baked in
                    pixels = None
                cpu[name] += time.process_time() - started
                if pixels is None:
                    refused[name] += 1
                    continue
                if name == "pillow":
                    reference = pixels.astype(np.int16)
                    compared += 1
                elif reference is not None:
                    difference = np.abs(pixels.astype(np.int16) - reference)
                    worst[name] = max(worst[name], int(difference.max()))
                    total[name] += int(difference.sum())
        for name in chosen:
            mean = total[name] / max(1, compared * size * size * 3)
            cpu_ms = 1000.0 * cpu[name] / len(photos)
            out[name, size] = Measured(cpu_ms, worst[name], mean, refused[name])
    return out


def table(results: Results, names: Sequence[str], sizes: Sequence[int]) -> list[str]:
    sized = " | ".join(str(s) for s in sizes)
    lines = [
        f"| decoder | CPU ms/photo {sized} | CPU vs pillow | max abs diff {sized} "
        f"| mean abs diff {sized} | refused |",
        "| --- | " + " | ".join(["---:"] * (3 * len(sizes) + 2)) + " |",
    ]
    base = sum(results[names[0], s].cpu_ms for s in sizes)
    for name in names:
        row = [results[name, s] for s in sizes]
        change = 100.0 * (sum(m.cpu_ms for m in row) / base - 1.0)
        cells = [
            *(f"{m.cpu_ms:.2f}" for m in row),
            f"{change:+.0f}%",
            *(str(m.max_diff) for m in row),
            *(f"{m.mean_diff:.3f}" for m in row),
            "/".join(str(m.refused) for m in row),
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def sample(folder: Path, pattern: str, n: int, seed: int) -> list[bytes]:
    paths = sorted(folder.glob(pattern))
    if n < len(paths):
        paths = random.Random(seed).sample(paths, n)
    return [path.read_bytes() for path in paths]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help="the shared data folder")
    parser.add_argument("--shared", type=int, default=300, help="landmark photos (fixed sample)")
    parser.add_argument("--fullsize", type=int, default=40, help="camera-size photos (0: none)")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="input sizes")
    parser.add_argument("--decoders", default="", help="comma-separated names (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    chosen = decoders()
    if args.decoders:
        wanted = ["pillow", *(n.strip() for n in args.decoders.split(",") if n.strip() != "pillow")]
        chosen = {name: chosen[name] for name in wanted if name in chosen}
    sets = [
        ("shared landmark photos (longest side <= 448 px)", "landmarks", "*/*.jpg", args.shared),
        ("camera-size photos (shorter side >= 900 px)", "photos-fullsize", "*.jpg", args.fullsize),
    ]
    print(f"decoders: {', '.join(chosen)}; CPU = time.process_time, one thread", flush=True)
    for title, folder, pattern, n in sets:
        photos = sample(args.data / folder, pattern, n, args.seed) if n > 0 else []
        if not photos:
            print(f"\n{title}: none in {args.data / folder}")
            continue
        started = time.monotonic()
        results = measure(photos, chosen, sizes)
        print(f"\n{title}: {len(photos)} ({time.monotonic() - started:.0f} s)")
        print("\n".join(table(results, list(chosen), sizes)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
