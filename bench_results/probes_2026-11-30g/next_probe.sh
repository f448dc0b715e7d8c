#!/usr/bin/env bash
# The two prepared changes on the H200, in one device call (carry .whl; ~6-8 minutes):
#   bash bench_results/probes_2026-11-30g/next_probe.sh OUT
# Code variants, each a copy of hf_lrnn/tests/scripts in /tmp: main; add_norm (add_norm.diff, branch add-norm);
# add_norm_swiglu (add_norm.diff then swiglu_on_add_norm.diff, branch add-norm-swiglu).
# 1. the GPU tests of add_norm_swiglu (norms, SwiGLU, Triton-backend models, GPU models, decoding);
# 2. the training-step probe (wall, host, GPU kernel time; fused AdamW), the three variants alternating, twice;
# 3. decoding through generate() (captured steps, context 2048, batch 1 and 64) for main and add_norm_swiglu.
set -u
out=$1; here=bench_results/probes_2026-11-30g
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>/dev/null
for v in main add_norm add_norm_swiglu; do
  rm -rf /tmp/code_$v && mkdir -p /tmp/code_$v && cp -r hf_lrnn tests scripts /tmp/code_$v/
done
(cd /tmp/code_add_norm && git apply "$OLDPWD/$here/add_norm.diff") || echo "could not apply add_norm.diff"
(cd /tmp/code_add_norm_swiglu && git apply "$OLDPWD/$here/add_norm.diff" && git apply "$OLDPWD/$here/swiglu_on_add_norm.diff") \
  || echo "could not apply the swiglu diff"
(cd /tmp/code_add_norm_swiglu && PYTHONPATH=.:/tmp/site timeout 240 python3 -m pytest -q -p no:cacheprovider -n 8 \
  tests/test_norm_triton.py tests/test_swiglu_triton.py tests/test_models_triton_backend.py tests/test_models_gpu.py \
  tests/test_decoding.py 2>&1 | tail -n 5) | tee $out/tests_add_norm_swiglu.txt
for round in 1 2; do
  for v in main add_norm add_norm_swiglu; do
    OPT=fused PYTHONPATH=/tmp/code_$v timeout 80 python3 $here/model_host_probe.py $v $out/next_probe.json \
      hlru2 bdlru4 2>&1 | grep -v "Warn\|warn" | tee -a $out/next_probe.txt
  done
done
for v in main add_norm_swiglu; do
  (cd /tmp/code_$v && PYTHONPATH=.:/tmp/site timeout 150 python3 scripts/bench_generate.py --models hlru-m2,bdlru-m4 \
    --modes cuda-graph --contexts 2048 --batches 64 --ttft_context 0 --steps 32 --out $out/gen_$v.json 2>&1 \
    | grep -v "Warn\|warn" | tail -n 8) | tee -a $out/next_gen.txt
done
