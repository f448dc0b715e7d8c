#!/usr/bin/env bash
# Measure the prepared changes on the H200, in one device call (carry .whl):
#   bash bench_results/probes_2026-11-30e/prepared_probe.sh OUT
# Builds a copy of hf_lrnn per change from the diffs next to this file, then runs model_host_probe.py (wall, host
# wait, GPU kernel time per training step) on each, alternating, twice: main, window_function, autocast_once,
# fused_norm (which includes autocast_once). Then the GPU tests of the norm kernels' model paths on fused_norm.
set -u
out=$1
here=bench_results/probes_2026-11-30e
export PYTHONUNBUFFERED=1
for v in window_function autocast_once fused_norm; do
  rm -rf /tmp/code_$v && mkdir -p /tmp/code_$v && cp -r hf_lrnn tests scripts /tmp/code_$v/
  (cd /tmp/code_$v && git apply "$OLDPWD/$here/$v.diff") || echo "could not apply $v.diff"
done
mkdir -p /tmp/code_main && cp -r hf_lrnn /tmp/code_main/
for round in 1 2; do
  for v in main window_function autocast_once fused_norm; do
    PYTHONPATH=/tmp/code_$v timeout 70 python3 $here/model_host_probe.py $v $out/prepared.json hlru2 bdlru4 llama 2>&1 \
      | grep -v "Warn\|warn" | tee -a $out/prepared.txt
  done
done
(cd /tmp/code_fused_norm && PYTHONPATH=. timeout 200 python3 -m pytest -q -p no:cacheprovider -n 8 tests/test_norm_triton.py \
  tests/test_models_gpu.py tests/test_models_triton_backend.py tests/test_decoding.py 2>&1 | tail -n 5) | tee $out/tests_fused_norm.txt
