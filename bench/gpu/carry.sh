#!/usr/bin/env bash
# Prepare, on this machine, what one call on a GPU machine needs (it has JAX, CuPy and PyTorch
# but no network, no TensorFlow and none of this project's other packages):
#   .whl/        nvImageCodec, nvJPEG and the pure-Python packages the worker imports;
#   .whl/pyX.Y/  the compiled ones (pydantic-core, optree) for Python 3.10-3.13;
#   .gpu/model   a model export (Keras 3, backend-neutral);
#   .gpu/photos  every Nth shared landmark photo.
# Both folders are git-ignored; pass them to the device call with carry=[".whl", ".gpu"] and run
# bench/gpu/device_run.sh there. Keep the total under the 64 MiB a call may carry.
#
#   bench/gpu/carry.sh .run/bench/train/model [PHOTOS=96]
set -euo pipefail
cd "$(dirname "$0")/../.."
model=${1:?usage: bench/gpu/carry.sh MODEL_EXPORT_DIR [PHOTOS]}
count=${2:-96}
data=${LANDMARK_DATA_DIR:-../shared/data/landmarks}
pip=(.venv/bin/pip download --quiet --no-deps --only-binary=:all: --platform manylinux2014_x86_64
     --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64)
frozen() { .venv/bin/pip freeze 2>/dev/null | grep -i -E "^($1)=="; }

rm -rf .whl .gpu
mkdir -p .whl .gpu/photos
# shellcheck disable=SC2046  # one requirement a word
"${pip[@]}" --python-version 3.12 -d .whl 'nvidia-nvimgcodec-cu13==0.9.0.20' \
    'nvidia-nvjpeg==13.3.2.43' $(frozen 'keras|namex|structlog|kafka-python|pydantic|pydantic-settings|annotated-types|typing-inspection|python-dotenv|prometheus.client')
for version in 3.10 3.11 3.12 3.13; do
    # shellcheck disable=SC2046
    "${pip[@]}" --python-version "$version" -d ".whl/py$version" $(frozen 'pydantic.core|optree')
done
cp -r "$model" .gpu/model
mapfile -t photos < <(find "$data" -name '*.jpg' | sort)
step=$(( ${#photos[@]} / count > 0 ? ${#photos[@]} / count : 1 ))
for ((i = 0; i < ${#photos[@]} && i / step < count; i += step)); do
    cp "${photos[$i]}" ".gpu/photos/$(printf '%04d' $((i / step))).jpg"
done
du -sh .whl .gpu
# What a call sends: the tracked files and these two folders (the limit is 64 MiB).
tree=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
carried=$(du -sbc .whl .gpu | tail -1 | cut -f1)
echo "the call would send $(( (tree + carried) / 1048576 )) MiB of 64 MiB"
