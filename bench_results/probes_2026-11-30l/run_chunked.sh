#!/usr/bin/env bash
# The tenth session's GPU call for the look-back chunks (carry .whl): the time-last GPU tests, then the probe.
#   bash bench_results/probes_2026-11-30l/run_chunked.sh OUT
set -u
out=$1
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONPATH=.:/tmp/site
[ "${SKIP_TESTS:-0}" = 1 ] || timeout -s INT -k 15 200 python3 -m pytest -q -p no:cacheprovider -n 8 tests/test_scan_time_last.py 2>&1 \
  | tail -n 15 | tee "$out/gpu_tests.txt"
timeout 330 python3 bench_results/probes_2026-11-30l/chunked/probe.py "$out" 2>&1 | grep -v Warn
