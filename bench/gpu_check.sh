#!/usr/bin/env bash
# The GPU check, run once on a lent CUDA machine from the repository root (how: the
# docstring of bench/gpu_check.py). Carries: .whl (wheels the GPU image lacks, from
# `bash ../shared/tools/device-prep.sh pytest pluggy iniconfig packaging tqdm`) and
# .gpu-data (the sample videos plus cpu160.uarv, a CPU-encoded stream). Results in $OUT.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
mkdir -p ../shared && ln -sfn "$PWD/.gpu-data" ../shared/data
{ nvidia-smi; python3 -c "import torch; print(torch.__version__, torch.version.cuda)"; } > "$OUT/run.log" 2>&1
timeout 100 python3 -m pytest -q -p no:cacheprovider tests/core/codec/test_fit.py \
  tests/core/codec/test_warp.py tests/core/codec/test_golden.py > "$OUT/pytest.log" 2>&1
timeout 150 python3 -m bench.speed --device cuda --widths 160,320,640 --steps 100 \
  --variants 640 --decode-frames 64 --out "$OUT" >> "$OUT/run.log" 2>&1
timeout 280 python3 -m bench.gpu_check --out "$OUT" --data .gpu-data --budget 250 \
  --cpu-stream .gpu-data/cpu160.uarv --qualities 5 --long-steps 2000 >> "$OUT/run.log" 2>&1
tail -c 3000 "$OUT/run.log"
