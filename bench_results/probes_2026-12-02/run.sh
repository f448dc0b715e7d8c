#!/usr/bin/env bash
# GPU runs of the fourteenth session (carry .whl: pytest-xdist, execnet, fla-core, accelerated-scan), each one device
# call of < 10 minutes:
#   bash bench_results/probes_2026-12-02/run.sh m4 OUT      # H-LRU m = 4 time-last, whole rows against chunks joined by
#                                                          # the look-back (probe_m4_chunks.py), then the GPU tests of
#                                                          # tests/test_scan_time_last.py
#   bash bench_results/probes_2026-12-02/run.sh final OUT   # the GPU tests of order 4 (chunks, rows, window, bias, register
#                                                          # caps, models), then scripts/bench_scan.py's rows of m = 4
#   bash bench_results/probes_2026-12-02/run.sh table OUT   # scripts/bench_scan.py's kernel table (~6 min)
set -u
part=$1; out=$2
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONPATH=.:/tmp/site
case "$part" in
  m4)
    timeout 250 python3 bench_results/probes_2026-12-02/probe_m4_chunks.py --out "$out/m4_chunks.json" 2>&1 \
      | grep -v Warn | tee "$out/m4_chunks.txt"
    timeout 320 python3 -m pytest -q -n 12 -p no:cacheprovider tests/test_scan_time_last.py 2>&1 | tail -15 \
      | tee "$out/gpu_tests.txt" ;;
  final)
    timeout 200 python3 -m pytest -q -n 12 -p no:cacheprovider tests/test_scan_time_last.py \
      -k "order_4 or window_and_gate_bias or register_cap or model" 2>&1 | tail -4 | tee "$out/gpu_tests_order_4.txt"
    timeout 300 python3 scripts/bench_scan.py --no-ref --no-warp --no-model --orders 4 --out "$out/bench_scan_m4.json" \
      2>&1 | grep -v Warn | tee "$out/bench_scan_m4.txt" | tail -14 ;;
  table)
    timeout 540 python3 scripts/bench_scan.py --no-ref --no-warp --no-model --out "$out/bench_scan_h200.json" 2>&1 \
      | grep -v Warn | tee "$out/bench_scan_h200.txt" | tail -48 ;;
  *) echo "part must be m4, final or table, got $part"; exit 2 ;;
esac
