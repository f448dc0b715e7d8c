#!/usr/bin/env bash
# What the next GPU session runs first, in three device calls of < 10 minutes (carry .whl):
#   bash bench_results/probes_2026-11-30h/next_session.sh tests OUT     # the full GPU suite on this code (the fused
#                                                                       # decode kernel's GPU tests included)
#   bash bench_results/probes_2026-11-30h/next_session.sh generate OUT  # the generation table on this code, Llama
#                                                                       # (dynamic; static + compile) in the same run
#   bash bench_results/probes_2026-11-30h/next_session.sh kernels OUT   # m = 1: look-back against per-thread chunked
#                                                                       # kernels, then the time-last probe
#   bash bench_results/probes_2026-11-30h/next_session.sh graphs OUT    # the model rows with every training step one
#                                                                       # captured CUDA graph (Llama's too), then the
#                                                                       # GPU test of that recipe
# The last two parts are what ../probes_2026-11-30g/next_probe.sh decode ran besides decoding; that call did not fit
# in this session's budget.
set -u
part=$1; out=$2; old=bench_results/probes_2026-11-30g
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>/dev/null
case "$part" in
  tests) bash scripts/run_h200.sh tests "$out" ;;
  generate)
    PYTHONPATH=.:/tmp/site timeout 560 python3 scripts/bench_generate.py --models hlru-m2,bdlru-m4,llama \
      --modes cuda-graph,dynamic,static+compile --steps 32 --out "$out/bench_generate.json" 2>&1 \
      | grep -v "Warn\|warn\|__cudagraphs\|falling back" | tail -n 40 | tee "$out/bench_generate.txt" ;;
  kernels)
    PYTHONPATH=.:/tmp/site timeout 200 python3 scripts/bench_scan.py --compare_first_order \
      --out "$out/compare_first_order.json" 2>&1 | grep -v "Warn\|warn" | tee "$out/compare_first_order.txt"
    PYTHONPATH=.:/tmp/site timeout 80 python3 -m pytest -q -p no:cacheprovider -n 8 $old/time_last/test_time_last.py 2>&1 \
      | tail -n 3 | tee "$out/time_last_tests.txt"
    PYTHONPATH=.:/tmp/site timeout 280 python3 $old/time_last/bench_time_last.py "$out/time_last.json" 2>&1 \
      | grep -v "Warn\|warn" | tee "$out/time_last.txt" ;;
  graphs)
    MODEL_CUDA_GRAPH=1 bash scripts/run_h200.sh models "$out"
    PYTHONPATH=.:/tmp/site timeout 60 python3 -m pytest -q -p no:cacheprovider tests/test_bench_scripts.py -k captured \
      2>&1 | tail -n 3 | tee "$out/captured_step_test.txt" ;;
  *) echo "part must be tests, generate, kernels or graphs, got $part"; exit 2 ;;
esac
