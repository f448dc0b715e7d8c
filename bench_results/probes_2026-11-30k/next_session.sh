#!/usr/bin/env bash
# What the next GPU session runs first (carry .whl), in device calls of < 10 minutes:
#   bash bench_results/probes_2026-11-30k/next_session.sh window OUT   # the time-last GPU tests (the scan-written
#                                                                      # window, never run on a GPU), then the models'
#                                                                      # kernels per step and captured steps, time-first
#                                                                      # against time-last (~4 min)
#   bash bench_results/probes_2026-11-30k/next_session.sh default OUT  # the GPU model tests with scan_layout's default
#                                                                      # flipped to "time_last" in this copy only: if
#                                                                      # they pass, flip it in the repository (~6 min)
#   bash bench_results/probes_2026-11-30k/next_session.sh m4 OUT       # the m = 4 in-thread probe (m4_in_threads/):
#                                                                      # exactness, then % of copy (forward, f+b) against the library's
#                                                                      # [B, T, N] m = 4 forward (~2 min)
set -u
part=$1; out=$2
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONPATH=.:/tmp/site
case "$part" in
  window)
    timeout -s INT -k 15 150 python3 -m pytest -q -p no:cacheprovider -n 8 tests/test_scan_time_last.py 2>&1 \
      | tail -n 15 | tee "$out/gpu_tests.txt"
    timeout 120 python3 bench_results/probes_2026-11-30j/model_kernels.py "$out" 2>&1 | grep "=="
    timeout 200 python3 scripts/bench_scan.py --only-model --model-cuda-graph \
      --models hlru1,hlru1-time-last,hlru2,hlru2-time-last --out "$out/bench_models_captured.json" 2>&1 \
      | grep -v Warn | tee "$out/bench_models_captured.txt" | tail -7 ;;
  default)
    sed -i 's/scan_layout: str = "time_first",/scan_layout: str = "time_last",/' hf_lrnn/configuration_lrnn.py
    grep -q 'scan_layout: str = "time_last"' hf_lrnn/configuration_lrnn.py || { echo "the default was not flipped"; exit 2; }
    timeout -s INT -k 15 500 python3 -m pytest -q -p no:cacheprovider -n 8 tests/test_models_gpu.py \
      tests/test_models_triton_backend.py tests/test_generation.py tests/test_decoding.py 2>&1 \
      | tail -n 30 | tee "$out/gpu_tests_default_time_last.txt"
    sed -i 's/scan_layout: str = "time_last",/scan_layout: str = "time_first",/' hf_lrnn/configuration_lrnn.py ;;
  m4)
    timeout 300 python3 bench_results/probes_2026-11-30k/m4_in_threads/probe.py "$out" 2>&1 | grep -v Warn ;;
  *) echo "part must be window, default or m4, got $part"; exit 2 ;;
esac
