#!/usr/bin/env bash
# The three prepared changes on the H200, in two device calls (carry .whl; each under 10 minutes):
#   bash bench_results/probes_2026-11-30g/next_probe.sh train OUT    # GPU tests of all three, then the training step
#   bash bench_results/probes_2026-11-30g/next_probe.sh decode OUT   # decoding through generate(), and m = 1 kernels
# Code variants, each a copy of hf_lrnn/tests/scripts in /tmp, the diffs applied in order:
#   main; add_norm (add_norm.diff); swiglu (+ swiglu_on_add_norm.diff); residual (+ residual_across_blocks.diff,
#   i.e. the branch residual-across-blocks).
# train: the GPU tests of `residual` (norms, SwiGLU, Triton-backend models, GPU models, decoding), then the
#   training-step probe (wall, host, GPU kernel time; fused AdamW), the four variants alternating, twice.
# decode: bench_generate.py (captured steps, context 2048 at batch 1, batch 64) for main and residual, then
#   bench_scan.py --compare_first_order (m = 1: the look-back kernels against the chunked per-thread kernels, which
#   were not there when it last ran), then the time-last m = 1 probe (time_last/: GPU test, then timings).
set -u
part=$1; out=$2; here=bench_results/probes_2026-11-30g
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>/dev/null
diffs=(add_norm swiglu_on_add_norm residual_across_blocks)
variants=(main add_norm swiglu residual)
for i in 0 1 2 3; do
  v=${variants[$i]}
  rm -rf /tmp/code_$v && mkdir -p /tmp/code_$v && cp -r hf_lrnn tests scripts /tmp/code_$v/
  for d in "${diffs[@]:0:$i}"; do
    (cd /tmp/code_$v && git apply "$OLDPWD/$here/$d.diff") || echo "could not apply $d.diff to $v"
  done
done
case "$part" in
  train)
    (cd /tmp/code_residual && PYTHONPATH=.:/tmp/site timeout 240 python3 -m pytest -q -p no:cacheprovider -n 8 \
      tests/test_norm_triton.py tests/test_swiglu_triton.py tests/test_models_triton_backend.py \
      tests/test_models_gpu.py tests/test_decoding.py 2>&1 | tail -n 5) | tee $out/tests_residual.txt
    for round in 1 2; do
      for v in "${variants[@]}"; do
        OPT=fused PYTHONPATH=/tmp/code_$v timeout 70 python3 $here/model_host_probe.py $v $out/next_probe.json \
          hlru2 bdlru4 2>&1 | grep -v "Warn\|warn" | tee -a $out/next_probe.txt
      done
    done ;;
  decode)
    for v in main residual; do
      (cd /tmp/code_$v && PYTHONPATH=.:/tmp/site timeout 150 python3 scripts/bench_generate.py \
        --models hlru-m2,bdlru-m4 --modes cuda-graph --contexts 2048 --batches 64 --ttft_context 0 --steps 32 \
        --out $out/gen_$v.json 2>&1 | grep -v "Warn\|warn" | tail -n 8) | tee -a $out/next_gen.txt
    done
    PYTHONPATH=.:/tmp/site timeout 200 python3 scripts/bench_scan.py --compare_first_order \
      --out $out/compare_first_order.json 2>&1 | grep -v "Warn\|warn" | tee $out/compare_first_order.txt
    # the time-last m = 1 probe kernels (time_last/): exactness on the GPU, then against the landed kernels and
    # accelerated-scan
    PYTHONPATH=.:/tmp/site timeout 120 python3 -m pytest -q -p no:cacheprovider $here/time_last/test_time_last.py 2>&1 \
      | tail -n 3 | tee $out/time_last_tests.txt
    PYTHONPATH=.:/tmp/site timeout 200 python3 $here/time_last/bench_time_last.py $out/time_last.json 2>&1 \
      | grep -v "Warn\|warn" | tee $out/time_last.txt ;;
  *) echo "part must be train or decode, got $part"; exit 2 ;;
esac
