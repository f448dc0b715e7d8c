#!/usr/bin/env bash
# GPU runs of the twelfth and thirteenth sessions (carry .whl, which holds pytest-xdist and execnet too), in device
# calls of < 10 minutes. All ran; kept so that each can be repeated:
#   bash bench_results/probes_2026-12-01/next_session.sh tests OUT   # GPU tests of the time-last scans and models
#                                                                    # (~6.5 min with -n 12)
#   bash bench_results/probes_2026-12-01/next_session.sh table OUT   # scripts/bench_scan.py's kernel table (~6 min)
#   bash bench_results/probes_2026-12-01/next_session.sh models OUT  # captured training steps: BD-LRU m = 2
#                                                                    # time-last against time-first, H-LRU m = 2 (~2 min)
#   bash bench_results/probes_2026-12-01/next_session.sh bd4 OUT     # BD-LRU block size 4's backward in two kernels
#                                                                    # (bd4/two_pass.py) against the library's
#                                                                    # backward (at fb71847 the fused kernel)
#   bash bench_results/probes_2026-12-01/next_session.sh small OUT   # BD-LRU block size 2 on small grids
# Not run yet (after the thirteenth session):
#   bash bench_results/probes_2026-12-01/next_session.sh adjoints OUT  # BD-LRU block size 4's adjoints: in the value
#                                                                      # gradients' buffer, in a float32 or a bfloat16
#                                                                      # buffer of their own (~1 min); why the first
#                                                                      # costs 25 % at B8 T4096 D1024
set -u
part=$1; out=$2
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONPATH=.:/tmp/site
case "$part" in
  tests)
    timeout 400 python3 -m pytest -q -n 12 -p no:cacheprovider tests/test_bdlru_time_last.py tests/test_scan_time_last.py \
      2>&1 | tail -15 | tee "$out/gpu_tests.txt" ;;
  small)
    timeout 300 python3 bench_results/probes_2026-12-01/bdlru2/probe_small_grid.py "$out" 2>&1 | grep -v Warn ;;
  models)
    timeout 400 python3 scripts/bench_scan.py --only-model --model-cuda-graph \
      --models bdlru2,bdlru2-time-first,hlru2 \
      --out "$out/bench_models_captured.json" 2>&1 | grep -v Warn | tee "$out/bench_models_captured.txt" | tail -6 ;;
  table)
    timeout 540 python3 scripts/bench_scan.py --no-ref --no-warp --no-model --out "$out/bench_scan_h200.json" 2>&1 \
      | grep -v Warn | tee "$out/bench_scan_h200.txt" | tail -48 ;;
  adjoints)
    timeout 300 python3 bench_results/probes_2026-12-01/bd4_two_kernels/probe_adjoint_buffer.py "$out" --split-dtype 2>&1 \
      | grep -v Warn ;;
  bd4)
    timeout 300 python3 bench_results/probes_2026-12-01/bd4/probe_two_pass.py "$out" 2>&1 | grep -v Warn ;;
  *) echo "part must be tests, small, models, table, bd4 or adjoints, got $part"; exit 2 ;;
esac
