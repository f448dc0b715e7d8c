#!/usr/bin/env bash
# GPU runs of the sixteenth session (carry .whl: pytest-xdist, execnet), each one device call of < 10 minutes:
#   bash bench_results/probes_2026-12-02c/run.sh bwdseg OUT  # H-LRU m = 2's backward in segments against the tile
#                                                           # scan on small grids, then the GPU tests of segments
#   bash bench_results/probes_2026-12-02c/run.sh rule OUT    # the backward's 32-warps-per-SM rule against the tile
#                                                           # scan at 512-2048 rows, then the table's m = 2 rows
#   bash bench_results/probes_2026-12-02c/run.sh bd2 OUT     # BD-LRU block size 2 in segments against the tile
#                                                           # scan, its GPU tests, then the table's m = 2 rows
#   bash bench_results/probes_2026-12-02c/run.sh bd4 OUT     # BD-LRU block size 4 in segments against whole rows
#                                                           # (not yet run), then BD-LRU's GPU tests
#   bash bench_results/probes_2026-12-02c/run.sh tests OUT   # the GPU tests of the time-last scans
#   bash bench_results/probes_2026-12-02c/run.sh table OUT   # scripts/bench_scan.py's m = 2 rows
set -u
part=$1; out=$2
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONPATH=.:/tmp/site
case "$part" in
  bwdseg)
    timeout 300 python3 bench_results/probes_2026-12-02c/probe_m2_backward_segments.py --out "$out/m2_bwd_segments.json" \
      2>&1 | tee "$out/m2_bwd_segments.txt"
    timeout 240 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_scan_time_last.py \
      -k "segments or window_and_gate_bias or launch_rule" 2>&1 | tail -4 | tee "$out/gpu_tests_segments.txt" ;;
  rule)
    timeout 200 python3 bench_results/probes_2026-12-02c/probe_m2_backward_segments.py --rule \
      --out "$out/m2_bwd_rule.json" 2>&1 | tee "$out/m2_bwd_rule.txt"
    timeout 360 python3 scripts/bench_scan.py --no-ref --no-warp --no-model --orders 2 \
      --out "$out/bench_scan_m2.json" 2>&1 | grep -v Warn | tee "$out/bench_scan_m2.txt" | tail -30 ;;
  bd2)
    timeout 200 python3 bench_results/probes_2026-12-02c/probe_bd2_segments.py --out "$out/bd2_segments.json" 2>&1 \
      | tee "$out/bd2_segments.txt"
    timeout 260 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_bdlru_time_last.py tests/test_scan_time_last.py \
      -k "bdlru or block_size or segments or window_and_gate_bias or launch" -rf --tb=line 2>&1 \
      | grep -v Warn | grep -i "assert\|Error\|FAILED\|passed\|failed" | tail -20 | tee "$out/gpu_tests_bd2.txt"
    timeout 100 python3 scripts/bench_scan.py --no-ref --no-warp --no-model --orders 2 \
      --out "$out/bench_scan_m2_bd2.json" 2>&1 | grep -v Warn | tee "$out/bench_scan_m2_bd2.txt" | tail -16 ;;
  bd4)
    timeout 240 python3 bench_results/probes_2026-12-02c/probe_bd4_segments.py --out "$out/bd4_segments.json" 2>&1 \
      | tee "$out/bd4_segments.txt"
    timeout 300 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_bdlru_time_last.py -rf --tb=line 2>&1 \
      | grep -v Warn | grep -i "assert\|Error\|FAILED\|passed\|failed" | tail -20 | tee "$out/gpu_tests_bd4.txt" ;;
  tests)
    timeout 560 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_scan_time_last.py \
      tests/test_bdlru_time_last.py 2>&1 | tail -15 | tee "$out/gpu_tests.txt" ;;
  table)
    timeout 540 python3 scripts/bench_scan.py --no-ref --no-warp --no-model --orders 2 \
      --out "$out/bench_scan_m2.json" 2>&1 | grep -v Warn | tee "$out/bench_scan_m2.txt" | tail -30 ;;
  *) echo "part must be bwdseg, rule, bd2, bd4, tests or table, got $part"; exit 2 ;;
esac
