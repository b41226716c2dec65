#!/usr/bin/env bash
# Run on the GPU machine, from the repository root, with .whl/ and .gpu/ carried
# (bench/gpu/carry.sh made them): installs the wheels beside the machine's JAX, then runs the GPU
# decoding check and writes its table to $OUT/gpu_decode.md, then the loop's ceiling by reference
# with glibc's allocator at its defaults and as the worker tunes it, and with the GPU decoder's
# checks in the decoding threads ($OUT/bench_loop.md). Extra arguments go to gpu_decode.py.
set -euo pipefail
python=${PYTHON:-python3}
version=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
"$python" -m pip install --quiet --no-index --no-deps --target /tmp/site .whl/*.whl ".whl/py$version"/*.whl
export PYTHONPATH="/tmp/site:$PWD" KERAS_BACKEND=jax XLA_PYTHON_CLIENT_MEM_FRACTION=0.5
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$python" -c 'import jax; print("jax", jax.__version__, jax.devices())'
"$python" bench/gpu/gpu_decode.py --export .gpu/model --photos .gpu/photos \
    --out "${OUT:-/tmp}/gpu_decode.md" "$@"
# The loop's own ceiling with camera-size photos by reference, glibc's allocator as the worker
# tunes it and at its defaults (a few seconds each).
for allocator in system tuned; do
    "$python" bench/bench_loop.py --payload-kb 1400 --batch 256 --batches 12 --photos file \
        --decode-threads 8 --runs "memory>memory" --allocator "$allocator" \
        | tee -a "${OUT:-/tmp}/bench_loop.md"
done
# The GPU decoder's own checks in the decoding threads (its takes(): the JPEG header, the scan
# read to its end) on 16 synthetic camera photos by reference: every photo taken unchecked, then
# as the GPU decoder checks it (a few seconds each).
for takes in all checked; do
    "$python" bench/bench_loop.py --camera 16 --batch 256 --batches 12 --photos file \
        --decode-threads 16 --runs "memory>memory" --takes "$takes" \
        | tee -a "${OUT:-/tmp}/bench_loop.md"
done
