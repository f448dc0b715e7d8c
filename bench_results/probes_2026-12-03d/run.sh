#!/usr/bin/env bash
# Twenty-first session: ncu profiles of the time-last kernels whose targets are missed (and of two that meet them,
# for calibration) and of the [B, T, N] kernels of m = 8 and 16; then the tables and GPU tests after the .ftz exp and
# reciprocal (`_exp`, `_reciprocal` in hf_lrnn/scan_triton.py). One device call each:
#   bash bench_results/probes_2026-12-03d/run.sh profile OUT  # ncu, then summarise.py
#   bash bench_results/probes_2026-12-03d/run.sh tables OUT   # bench_scan.py --orders 2, 1, 4 (carry .whl)
#   bash bench_results/probes_2026-12-03d/run.sh tests OUT    # the scan files' GPU tests (carry .whl)
#   bash bench_results/probes_2026-12-03d/run.sh even OUT     # branch even-tiles: the new GPU tests, then
#                                                             # probe_even_tiles.py (carry .whl)
#   bash bench_results/probes_2026-12-03d/run.sh words OUT    # branch bd-word-loads: the GPU tests of the [B, T, N]
#                                                             # kernels, then probe_word_loads.py (carry .whl; the
#                                                             # m = 8 kernels compile for minutes on a cold cache)
set -u
part=$1; out=$2
mkdir -p "$out"
here=bench_results/probes_2026-12-03d
export PYTHONUNBUFFERED=1 PYTHONPATH=.
metrics=gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,dram__bytes_read.sum,\
dram__bytes_write.sum,sm__throughput.avg.pct_of_peak_sustained_elapsed,\
sm__warps_active.avg.pct_of_peak_sustained_active,smsp__issue_active.avg.pct_of_peak_sustained_active,\
launch__registers_per_thread,launch__grid_size,launch__block_size,launch__shared_mem_per_block_dynamic,\
launch__occupancy_limit_registers,launch__occupancy_limit_shared_mem,launch__waves_per_multiprocessor,\
l1tex__throughput.avg.pct_of_peak_sustained_active,lts__t_sector_hit_rate.pct,smsp__inst_executed.sum,\
smsp__warps_eligible.avg.per_cycle_active,\
"regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio"
case "$part" in
  profile)
    while read -r layout op B T D m; do
      name=${layout}_${op}_m${m}_B${B}_T${T}_D${D}
      echo "== $name"
      timeout 240 ncu --clock-control none --profile-from-start off --csv --page raw --metrics "$metrics" \
        python3 $here/profile_case.py "$layout" "$op" "$B" "$T" "$D" "$m" > "$out/$name.csv" 2> "$out/$name.err" \
        || { echo "failed: $(tail -3 "$out/$name.err")"; }
    done <<'CASES'
time_last hlru 8 4096 1024 1
time_last hlru 8 4096 1024 2
time_last hlru 1 16384 1024 2
time_last bdlru 1 16384 1024 2
time_last hlru 8 4096 1024 4
time_last hlru 1 16384 1024 4
time_last bdlru 8 4096 1024 4
time_last bdlru 1 16384 1024 4
time_first hlru 8 4096 1024 8
time_first bdlru 8 4096 1024 8
time_first bdlru 8 4096 1024 16
time_first bdlru 1 16384 1024 16
CASES
    python3 $here/summarise.py "$out" | tee "$out/profile.txt" ;;
  tables)
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>/dev/null
    for order in 2 1 4; do
      PYTHONPATH=.:/tmp/site timeout 170 python3 scripts/bench_scan.py --no-ref --no-warp --no-model --orders "$order" \
        --out "$out/bench_scan_m$order.json" 2>&1 | grep -v Warn | tee "$out/bench_scan_m$order.txt" | tail -12
    done ;;
  tests)
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>/dev/null
    PYTHONPATH=.:/tmp/site timeout 330 python3 -m pytest -q -p no:cacheprovider -n 14 tests/test_scan_triton_gpu.py \
      tests/test_gate_extremes.py tests/test_decode_triton.py tests/test_scan_time_last.py tests/test_bdlru_time_last.py \
      -k "gpu or extreme or test_scan_triton_gpu or test_decode_triton" 2>&1 | grep -v -i 'warner\|benchmarkwarning' \
      | tail -25 | tee "$out/gpu_tests.txt" ;;
  even)
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>/dev/null
    PYTHONPATH=.:/tmp/site timeout 200 python3 -m pytest -q -p no:cacheprovider -n 14 tests/test_scan_triton_gpu.py \
      tests/test_scan_time_last.py -k "ftz or whole_tiles or (test_scan_time_last and gpu)" 2>&1 \
      | grep -v -i 'warner\|benchmarkwarning' | tail -15 | tee "$out/gpu_tests_even.txt"
    PYTHONPATH=.:/tmp/site timeout 330 python3 $here/probe_even_tiles.py --out "$out/even_tiles.json" 2>&1 \
      | grep -v Warn | tee "$out/even_tiles.txt" ;;
  words)
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>/dev/null
    PYTHONPATH=.:/tmp/site timeout 200 python3 -m pytest -q -p no:cacheprovider -n 14 tests/test_scan_triton_gpu.py \
      2>&1 | grep -v -i 'warner\|benchmarkwarning' | tail -15 | tee "$out/gpu_tests_words.txt"
    PYTHONPATH=.:/tmp/site timeout 360 python3 $here/probe_word_loads.py --out "$out/word_loads.json" 2>&1 \
      | grep -v Warn | tee "$out/word_loads.txt" ;;
  ab)  # twenty-second session, branch ab-both (even-tiles + bd-word-loads): the new GPU test, both probes
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>/dev/null
    PYTHONPATH=.:/tmp/site timeout 120 python3 -m pytest -q -p no:cacheprovider -n 14 --tb=short \
      tests/test_scan_time_last.py -k "whole_tiles" 2>&1 | grep -v -i 'warner\|benchmarkwarning' > "$out/gpu_tests_ab.txt"
    tail -25 "$out/gpu_tests_ab.txt"
    PYTHONPATH=.:/tmp/site timeout 200 python3 $here/probe_even_tiles.py --batches 8 1 --out "$out/even_tiles.json" 2>&1 \
      | grep -v Warn | tee "$out/even_tiles.txt"
    PYTHONPATH=.:/tmp/site timeout 240 python3 $here/probe_word_loads.py --m 8 --batches 8 1 --out "$out/word_loads.json" \
      2>&1 | grep -v Warn | tee "$out/word_loads.txt" ;;
  *) echo "part must be profile, tables, tests, even, words or ab, got $part"; exit 2 ;;
esac
