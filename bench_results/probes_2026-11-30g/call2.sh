#!/usr/bin/env bash
# Triton norms merged, fused AdamW in the model rows: the whole-model rows, then every GPU test.
#   bash bench_results/probes_2026-11-30g/call2.sh OUT
out=$1
bash scripts/run_h200.sh models $out > /dev/null 2>&1
tail -n 9 $out/bench_models.txt
export PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1
timeout 430 python3 -m pytest -q -p no:cacheprovider -n 8 tests/test_scan_triton_gpu.py tests/test_models_gpu.py \
  tests/test_models_triton_backend.py tests/test_varlen.py tests/test_gate_extremes.py tests/test_decoding.py \
  tests/test_compile.py tests/test_norm_triton.py 2>&1 | tail -n 30 > $out/gpu_tests.txt
tail -n 3 $out/gpu_tests.txt
