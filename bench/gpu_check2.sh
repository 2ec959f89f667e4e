set -u
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
mkdir -p ../shared && ln -sfn "$PWD/.gpu-data" ../shared/data
timeout 300 python3 -m bench.gpu_check --out "$OUT" --data .gpu-data --budget 250 \
  --sections profile,tf32,groups_small,rd_steps --steps-list 300,10000 --tf32 > "$OUT/run2.log" 2>&1
mv "$OUT/gpu_check.json" "$OUT/gpu_check2.json"
tail -c 2500 "$OUT/run2.log"
