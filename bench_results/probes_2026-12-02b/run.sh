#!/usr/bin/env bash
# GPU runs of the fifteenth session (carry .whl: pytest-xdist, execnet), each one device call of < 10 minutes:
#   bash bench_results/probes_2026-12-02b/run.sh m2 OUT     # H-LRU m = 2 and BD-LRU block size 2 time-last on small
#                                                          # grids, whole rows against chunks (probe_m2_chunks.py)
#   bash bench_results/probes_2026-12-02b/run.sh tests OUT  # the GPU tests of the time-last scans
#   bash bench_results/probes_2026-12-02b/run.sh table OUT  # scripts/bench_scan.py's kernel table (~7 min)
#   bash bench_results/probes_2026-12-02b/run.sh m4seg OUT  # H-LRU m = 4's forward in segments against chunks, then the
#                                                          # GPU tests of segments (ran at 43668fa; the segments of
#                                                          # order 4 were removed after it)
set -u
part=$1; out=$2
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONPATH=.:/tmp/site
case "$part" in
  m2)
    timeout 540 python3 bench_results/probes_2026-12-02b/probe_m2_chunks.py --out "$out/m2_chunks.json" 2>&1 \
      | tee "$out/m2_chunks.txt" ;;
  tests)
    timeout 540 python3 -m pytest -q -n 12 -p no:cacheprovider tests/test_scan_time_last.py \
      tests/test_bdlru_time_last.py 2>&1 | tail -15 | tee "$out/gpu_tests.txt" ;;
  table)
    timeout 540 python3 scripts/bench_scan.py --no-ref --no-warp --no-model --out "$out/bench_scan_h200.json" 2>&1 \
      | grep -v Warn | tee "$out/bench_scan_h200.txt" | tail -48 ;;
  m4seg)
    timeout 300 python3 bench_results/probes_2026-12-02b/probe_m4_segments.py --out "$out/m4_segments.json" 2>&1 \
      | tee "$out/m4_segments.txt"
    timeout 200 python3 -m pytest -q -n 12 -p no:cacheprovider tests/test_scan_time_last.py -k "segments or chunks or order_4" \
      2>&1 | tail -3 | tee "$out/gpu_tests_segments.txt" ;;
  *) echo "part must be m2, tests, table or m4seg, got $part"; exit 2 ;;
esac
