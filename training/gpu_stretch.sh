#!/usr/bin/env bash
# One stretch of a pair's training on a lent GPU, from what the repository holds (issue 13).
#
# Prepare here (CPU), once per session, into the ignored folder .devpack/:
#   bash training/gpu_stretch.sh prepare            # data pack, TorchServe's Python part, wheels
# Then on the GPU machine, from the repository root, with .devpack carried:
#   PAIR=selfie2anime MINUTES=7 bash training/gpu_stretch.sh run
# It checks the CUDA code paths (bench/cuda_paths.py), trains PAIR at 128 px with
# bf16 autocast at batch BATCH from model_store/PAIR.mar for MINUTES, and leaves in
# $OUT what `python -m training export $OUT/PAIR.generators.pt` needs, the
# discriminators (PAIR.pt), the sample grid, the losses and the logs.
set -euo pipefail
cd "$(dirname "$0")/.."
PAIR=${PAIR:-selfie2anime}
MINUTES=${MINUTES:-7}
BATCH=${BATCH:-16}
ITERS=${ITERS:-60000}  # the learning-rate schedule's length, in iterations of any batch size
PACK=.devpack

prepare() {
  local py=.venv/bin/python
  rm -rf "$PACK" && mkdir -p "$PACK/site" "$PACK/wheels"
  $py -m training pack-data "../shared/data/datasets/$PAIR" "$PACK/data/$PAIR" --img-size 128
  # TorchServe's Python package without its Java frontend: the handler's base class and Service.
  local site
  site=$($py -c 'import ts, pathlib; print(pathlib.Path(ts.__file__).parent.parent)')
  tar -C "$site" --exclude=frontend --exclude=__pycache__ -cf - ts | tar -C "$PACK/site" -xf -
  $py -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$PACK/wheels" psutil packaging
  du -sh "$PACK"
}

run() {
  : "${OUT:?set OUT to the folder whose files come back}"
  export PYTHONUNBUFFERED=1
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$PACK"/wheels/*.whl
  export PYTHONPATH="/tmp/site:$PWD/$PACK/site:$PWD"
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader >"$OUT/gpu.txt" || true
  python3 bench/cuda_paths.py --style "$PAIR" 2>&1 | tee "$OUT/cuda_paths.txt" || true
  python3 -m training fit --data "$PACK/data/$PAIR" --name "$PAIR" --out-dir /tmp/runs \
    --light --img-size 128 --ch 32 --n-dis-global 6 --n-dis-local 4 --iters "$ITERS" \
    --batch-size "$BATCH" --precision bf16 --num-workers 12 --init-from "model_store/$PAIR.mar" \
    --time-limit "$MINUTES" --log-every 100 --sample-every 1000 --save-every 1000000 \
    >"$OUT/fit.log" 2>&1 || true
  tail -c 3000 "$OUT/fit.log" | tr '\r' '\n' | tail -n 8
  python3 -m training pack "/tmp/runs/$PAIR/checkpoints/latest.pt" --out "$OUT"
  cp "/tmp/runs/$PAIR/samples_latest.png" "/tmp/runs/$PAIR/losses.csv" "$OUT/"
}

"${1:?usage: gpu_stretch.sh prepare|run}"
