#!/usr/bin/env bash
# What the next GPU session runs first (carry .whl), in device calls of < 10 minutes:
#   bash bench_results/probes_2026-11-30j/next_session.sh in_threads OUT  # the GPU tests of the time-last scans (with
#                                                                         # m = 2's in-thread forward and backward, never
#                                                                         # run on a GPU) and their A/B against the
#                                                                         # default (~3 min)
#   bash bench_results/probes_2026-11-30j/next_session.sh scan OUT        # bench_scan.py's table (after switching
#                                                                         # M2_IN_THREADS on, if the A/B says so)
set -u
part=$1; out=$2
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONPATH=.:/tmp/site
case "$part" in
  in_threads)
    timeout -s INT -k 15 200 python3 -m pytest -q -p no:cacheprovider -n 8 tests/test_scan_time_last.py 2>&1 \
      | tail -n 30 | tee "$out/gpu_tests.txt"
    timeout 300 python3 bench_results/probes_2026-11-30j/compare_in_threads.py "$out" 2>&1 | grep -v Warn ;;
  scan)
    timeout 560 python3 scripts/bench_scan.py --no-ref --no-warp --no-model --out "$out/bench_scan.json" 2>&1 \
      | grep -v Warn | tee "$out/bench_scan.txt" ;;
  *) echo "part must be in_threads or scan, got $part"; exit 2 ;;
esac
