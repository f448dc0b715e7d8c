#!/usr/bin/env bash
# GPU runs of the eighteenth session (carry .whl: pytest-xdist, execnet), each one device call of < 10 minutes:
#   bash bench_results/probes_2026-12-03/run.sh tests OUT    # the GPU tests of the time-last scans
#   bash bench_results/probes_2026-12-03/run.sh models OUT   # the other GPU tests (models, kernels, decoding)
#   bash bench_results/probes_2026-12-03/run.sh prefetch OUT # H-LRU m = 2's forward: prefetch depth probe
#   bash bench_results/probes_2026-12-03/run.sh pipelined OUT # every time-last forward with tl.range(num_stages)
#   bash bench_results/probes_2026-12-03/run.sh final OUT     # after adopting it: GPU tests of the launch paths, the
#                                                           # library's forwards alone
#   bash bench_results/probes_2026-12-03/run.sh final2 OUT   # after the shared-memory budget: the GPU tests of the
#                                                           # launch paths, pipelines and segments
#   bash bench_results/probes_2026-12-03/run.sh table OUT    # scripts/bench_scan.py's m = 2 rows
#   bash bench_results/probes_2026-12-03/run.sh table1 OUT   # its m = 1 rows (with fla and accelerated-scan)
#   bash bench_results/probes_2026-12-03/run.sh table4 OUT   # its m = 4 rows
set -u
part=$1; out=$2
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONPATH=.:/tmp/site
case "$part" in
  tests)
    timeout 560 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_scan_time_last.py \
      tests/test_bdlru_time_last.py -rf --tb=line 2>&1 | grep -v Warn | tail -15 | tee "$out/gpu_tests_time_last.txt" ;;
  models)
    timeout 560 python3 -m pytest -q -n 14 -p no:cacheprovider -m gpu tests --ignore=tests/test_scan_time_last.py \
      --ignore=tests/test_bdlru_time_last.py -rf --tb=line 2>&1 | grep -v Warn | tail -15 \
      | tee "$out/gpu_tests_others.txt" ;;
  prefetch)
    timeout 500 python3 bench_results/probes_2026-12-03/probe_m2_prefetch.py --out "$out/m2_prefetch.json" 2>&1 \
      | tee "$out/m2_prefetch.txt" ;;
  pipelined)
    timeout 540 python3 bench_results/probes_2026-12-03/probe_pipelined_forwards.py --out "$out/pipelined.json" 2>&1 \
      | tee "$out/pipelined.txt" ;;
  final)
    timeout 330 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_scan_time_last.py tests/test_bdlru_time_last.py \
      -k "gpu or pipeline or launch" -rf --tb=line 2>&1 | grep -v Warn | tail -8 | tee "$out/gpu_tests_final.txt"
    timeout 200 python3 bench_results/probes_2026-12-03/probe_pipelined_forwards.py --library-only \
      --out "$out/pipelined_library.json" 2>&1 | tee "$out/pipelined_library.txt" ;;
  final2)
    timeout 420 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_scan_time_last.py tests/test_bdlru_time_last.py \
      -k "gpu or pipeline or launch or segments-8 or in_segments" -rf --tb=line 2>&1 | grep -v Warn | tail -8 \
      | tee "$out/gpu_tests_final2.txt" ;;
  table)
    timeout 540 python3 scripts/bench_scan.py --no-ref --no-warp --no-model --orders 2 \
      --out "$out/bench_scan_m2.json" 2>&1 | grep -v Warn | tee "$out/bench_scan_m2.txt" | tail -30 ;;
  table1|table4)
    order=${part#table}
    timeout 560 python3 scripts/bench_scan.py --no-ref --no-warp --no-model --orders "$order" \
      --out "$out/bench_scan_m$order.json" 2>&1 | grep -v Warn | tee "$out/bench_scan_m$order.txt" | tail -30 ;;
  *) echo "part must be tests, models, prefetch, pipelined, final, final2, table, table1 or table4, got $part"; exit 2 ;;
esac
