#!/usr/bin/env bash
# GPU runs of the seventeenth session (carry .whl: pytest-xdist, execnet), each one device call of < 10 minutes:
#   bash bench_results/probes_2026-12-02d/run.sh bd4 OUT    # BD-LRU block size 4 in segments against whole rows,
#                                                          # then BD-LRU's GPU tests (BD4_SEGMENTS still off)
#   bash bench_results/probes_2026-12-02d/run.sh table4 OUT # BD4_SEGMENTS on: scripts/bench_scan.py's m = 4 rows,
#                                                          # then BD-LRU's GPU tests
#   bash bench_results/probes_2026-12-02d/run.sh caps OUT   # BD-LRU block size 2's register caps in threads
#   bash bench_results/probes_2026-12-02d/run.sh bias OUT   # the backwards with a gate bias, before and after
#                                                          # _step_sums; BD-LRU 2's register caps; GPU bias tests
#                                                          # (bias, final: write scan_time_last_before.py first,
#                                                          # as probe_bias_backward.py says)
#   bash bench_results/probes_2026-12-02d/run.sh final OUT  # H-LRU m = 2's biased backward at B16 / B32 again, the
#                                                          # GPU tests of both time-last files, the table's m = 2 rows
#   bash bench_results/probes_2026-12-02d/run.sh tests OUT  # the GPU tests of the H-LRU time-last scans
set -u
part=$1; out=$2
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONPATH=.:/tmp/site
case "$part" in
  bd4)
    timeout 240 python3 bench_results/probes_2026-12-02c/probe_bd4_segments.py --out "$out/bd4_segments.json" 2>&1 \
      | tee "$out/bd4_segments.txt"
    timeout 300 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_bdlru_time_last.py -rf --tb=line 2>&1 \
      | grep -v Warn | grep -i "assert\|Error\|FAILED\|passed\|failed" | tail -20 | tee "$out/gpu_tests_bd4.txt" ;;
  table4)
    timeout 300 python3 scripts/bench_scan.py --no-ref --no-warp --no-model --orders 4 \
      --out "$out/bench_scan_m4.json" 2>&1 | grep -v Warn | tee "$out/bench_scan_m4.txt" | tail -30
    timeout 280 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_bdlru_time_last.py -rf --tb=line 2>&1 \
      | grep -v Warn | grep -i "assert\|Error\|FAILED\|passed\|failed" | tail -20 | tee "$out/gpu_tests_bd4_on.txt" ;;
  caps)
    timeout 400 python3 bench_results/probes_2026-12-02d/probe_bd2_caps.py --out "$out/bd2_caps.json" 2>&1 \
      | tee "$out/bd2_caps.txt" ;;
  bias)
    timeout 300 python3 bench_results/probes_2026-12-02d/probe_bias_backward.py --out "$out/bias_backward.json" 2>&1 \
      | tee "$out/bias_backward.txt"
    timeout 240 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_scan_time_last.py tests/test_bdlru_time_last.py \
      -k "bias" -rf --tb=line 2>&1 | grep -v Warn | grep -i "assert\|Error\|FAILED\|passed\|failed" | tail -20 \
      | tee "$out/gpu_tests_bias.txt" ;;
  final)
    timeout 100 python3 bench_results/probes_2026-12-02d/probe_bias_backward.py --ops hlru2 \
      --shapes "32,2048,2048;16,4096,1024;32,2048,2048;8,2048,768" --out "$out/bias_backward_hlru2.json" 2>&1 \
      | tee "$out/bias_backward_hlru2.txt"
    timeout 330 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_scan_time_last.py tests/test_bdlru_time_last.py \
      -rf --tb=line 2>&1 | grep -v Warn | grep -i "assert\|Error\|FAILED\|passed\|failed" | tail -20 \
      | tee "$out/gpu_tests_final.txt"
    timeout 150 python3 scripts/bench_scan.py --no-ref --no-warp --no-model --orders 2 \
      --out "$out/bench_scan_m2.json" 2>&1 | grep -v Warn | tee "$out/bench_scan_m2.txt" | tail -16 ;;
  tests)
    timeout 560 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_scan_time_last.py -rf --tb=line 2>&1 \
      | grep -v Warn | grep -i "assert\|Error\|FAILED\|passed\|failed" | tail -20 | tee "$out/gpu_tests_scan.txt" ;;
  *) echo "part must be bd4, table4, caps, bias, final or tests, got $part"; exit 2 ;;
esac
