#!/usr/bin/env bash
# GPU runs of the nineteenth session (carry .whl: pytest-xdist, execnet), each one device call of < 10 minutes:
#   bash bench_results/probes_2026-12-03b/run.sh segments OUT  # small grids' runs per row, pipelined forwards
#   bash bench_results/probes_2026-12-03b/run.sh tables OUT    # after adopting the probe's rules: the forwards by the
#                                                              # rules, then the table's m = 4, 1 and 2 rows
# The GPU tests and the table's rows: bench_results/probes_2026-12-03/run.sh tests / table / table1 / table4.
set -u
part=$1; out=$2
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONPATH=.:/tmp/site
case "$part" in
  segments)
    timeout 420 python3 bench_results/probes_2026-12-03b/probe_segments.py --out "$out/segments.json" 2>&1 \
      | grep -v Warn | tee "$out/segments.txt" ;;
  tables)
    timeout 50 python3 bench_results/probes_2026-12-03b/probe_segments.py --defaults-only \
      --out "$out/segments_rules.json" 2>&1 | grep -v Warn | tee "$out/segments_rules.txt"
    for order in 4 1 2; do
      timeout 175 python3 scripts/bench_scan.py --no-ref --no-warp --no-model --orders "$order" \
        --out "$out/bench_scan_m$order.json" 2>&1 | grep -v Warn | tee "$out/bench_scan_m$order.txt" | tail -12
    done ;;
  *) echo "part must be segments or tables, got $part"; exit 2 ;;
esac
