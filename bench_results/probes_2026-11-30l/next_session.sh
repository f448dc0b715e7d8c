#!/usr/bin/env bash
# What the next GPU session runs first (carry .whl), in device calls of < 10 minutes:
#   bash bench_results/probes_2026-11-30l/next_session.sh maxnreg OUT  # the time-last kernels under register caps
#                                                                      # (maxnreg/probe.py, ~3 min): if a cap wins,
#                                                                      # put it in IN_THREADS_TILE / M4_TILE's launch
#                                                                      # options and rerun the table and the models
#   bash bench_results/probes_2026-11-30l/next_session.sh table OUT    # scripts/bench_scan.py's kernel table (~4.5 min)
#   bash bench_results/probes_2026-11-30l/next_session.sh models OUT   # captured training steps, time-last against
#                                                                      # time-first, H-LRU m = 1, 2, 4 (~3 min)
set -u
part=$1; out=$2
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONPATH=.:/tmp/site
case "$part" in
  maxnreg)
    timeout 500 python3 bench_results/probes_2026-11-30l/maxnreg/probe.py "$out" 2>&1 | grep -v Warn ;;
  table)
    timeout 540 python3 scripts/bench_scan.py --no-ref --no-warp --no-model --out "$out/bench_scan_h200.json" 2>&1 \
      | grep -v Warn | tee "$out/bench_scan_h200.txt" | tail -45 ;;
  models)
    timeout 400 python3 scripts/bench_scan.py --only-model --model-cuda-graph \
      --models hlru1,hlru1-time-first,hlru2,hlru2-time-first,hlru4,hlru4-time-first \
      --out "$out/bench_models_captured.json" 2>&1 | grep -v Warn | tee "$out/bench_models_captured.txt" | tail -9 ;;
  *) echo "part must be maxnreg, table or models, got $part"; exit 2 ;;
esac
