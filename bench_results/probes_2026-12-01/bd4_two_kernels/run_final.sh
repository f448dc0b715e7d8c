#!/usr/bin/env bash
# After the adjoints moved into the value gradients' buffer: BD-LRU time-last GPU tests, then the full kernel table
# (scripts/bench_scan.py --no-ref --no-warp --no-model). Usage: bash run_final.sh OUT (carry .whl)
set -u
out=$1; mkdir -p "$out/final"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONPATH=.:/tmp/site
timeout 170 python3 -m pytest -q -n 12 -p no:cacheprovider tests/test_bdlru_time_last.py 2>&1 | tail -4 \
  | tee "$out/final/gpu_tests.txt"
bash bench_results/probes_2026-12-01/next_session.sh table "$out/final"
