#!/usr/bin/env bash
# The tenth session's GPU calls for H-LRU m = 4 on time-last tensors (carry .whl):
#   bash bench_results/probes_2026-11-30l/run_m4.sh tests OUT   # GPU tests (time-last scans, models), then captured
#                                                               # training steps of H-LRU m = 4 time-last / time-first
#   bash bench_results/probes_2026-11-30l/run_m4.sh table OUT   # scripts/bench_scan.py's kernel table
set -u
part=$1; out=$2
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONPATH=.:/tmp/site
case "$part" in
  tests)
    timeout -s INT -k 15 330 python3 -m pytest -q -p no:cacheprovider -n 8 tests/test_scan_time_last.py \
      tests/test_models_gpu.py 2>&1 | tail -n 15 | tee "$out/gpu_tests.txt"
    timeout 200 python3 scripts/bench_scan.py --only-model --model-cuda-graph \
      --models hlru4,hlru4-time-first,hlru2 --out "$out/bench_models_captured.json" 2>&1 \
      | grep -v Warn | tee "$out/bench_models_captured.txt" | tail -6 ;;
  table)
    timeout 570 python3 scripts/bench_scan.py --no-ref --no-warp --no-model --out "$out/bench_scan_h200.json" 2>&1 \
      | grep -v Warn | tee "$out/bench_scan_h200.txt" | tail -45 ;;
  *) echo "part must be tests or table, got $part"; exit 2 ;;
esac
