#!/usr/bin/env bash
# BD-LRU block size 4's time-last backward as two kernels in the library (thirteenth session), on the H200:
# its GPU tests, the kernel rows of m = 4 (time-last against [B, T, N]) and the captured training step of BD-LRU
# m = 4 time-last against time-first. Usage: bash run.sh OUT (carry .whl)
set -u
out=$1; mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONPATH=.:/tmp/site
timeout 200 python3 -m pytest -q -n 12 -p no:cacheprovider tests/test_bdlru_time_last.py \
  "tests/test_scan_time_last.py" -k "4 or pays" 2>&1 | tail -6 | tee "$out/gpu_tests.txt"
timeout 150 python3 scripts/bench_scan.py --no-ref --no-warp --no-model --orders 4 --out "$out/bench_m4.json" 2>&1 \
  | grep -v Warn | tee "$out/bench_m4.txt" | tail -14
timeout 200 python3 scripts/bench_scan.py --only-model --model-cuda-graph --models bdlru4,bdlru4-time-first \
  --out "$out/bench_models_captured.json" 2>&1 | grep -v Warn | tee "$out/bench_models_captured.txt" | tail -6
