#!/usr/bin/env bash
# GPU runs of the twentieth session (carry .whl), each one device call of < 10 minutes:
#   bash bench_results/probes_2026-12-03c/run.sh stages OUT  # the backwards' tile loops with 1 / 2 / 3 stages, then
#                                                            # (on f8d71be with backward_stages.patch applied),
#                                                            # the captured training step of BD-LRU block size 4 with
#                                                            # time-last scans against [B, T, N] ones
#   bash bench_results/probes_2026-12-03c/run.sh after OUT   # after adopting BD-LRU 2's pipelined backward and
#                                                            # BD-LRU 4's time-last models: the GPU tests of the
#                                                            # BD-LRU time-last file and of the time-last models, the
#                                                            # table's m = 2 rows, then probe_tiles.py (the
#                                                            # tests ran into their 300 s limit at ~95 %)
#   bash bench_results/probes_2026-12-03c/run.sh tests OUT   # the BD-LRU file's GPU, launch and model tests and the
#                                                            # time-last model tests, alone
set -u
part=$1; out=$2
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONPATH=.:/tmp/site
case "$part" in
  stages)
    timeout 400 python3 bench_results/probes_2026-12-03c/probe_backward_stages.py --out "$out/stages.json" 2>&1 \
      | grep -v Warn | tee "$out/stages.txt"
    timeout 150 python3 scripts/bench_scan.py --only-model --model-cuda-graph --models bdlru4,bdlru4-time-first \
      --out "$out/models_bd4.json" 2>&1 | grep -v Warn | tee "$out/models_bd4.txt" | tail -20 ;;
  after)
    timeout 300 python3 -m pytest -q -p no:cacheprovider -n 14 tests/test_bdlru_time_last.py \
      "tests/test_scan_time_last.py" -k "not test_scan_time_last or model or launch or budget" 2>&1 \
      | tail -15 | tee "$out/gpu_tests.txt"
    timeout 120 python3 scripts/bench_scan.py --no-ref --no-warp --no-model --orders 2 \
      --out "$out/bench_scan_m2.json" 2>&1 | grep -v Warn | tee "$out/bench_scan_m2.txt" | tail -8
    timeout 200 python3 bench_results/probes_2026-12-03c/probe_tiles.py --out "$out/tiles.json" 2>&1 \
      | grep -v Warn | tee "$out/tiles.txt" ;;
  tests)
    timeout 240 python3 -m pytest -q -p no:cacheprovider -n 14 tests/test_bdlru_time_last.py \
      tests/test_scan_time_last.py -k "(test_bdlru_time_last and (gpu or launch or budget or model)) or \
      (test_scan_time_last and model)" 2>&1 | grep -v -i 'warner\|benchmarkwarning' | tail -15 | tee "$out/gpu_tests_final.txt" ;;
  *) echo "part must be stages, after or tests, got $part"; exit 2 ;;
esac
