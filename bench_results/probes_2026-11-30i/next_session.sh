#!/usr/bin/env bash
# What the next GPU session runs first (carry .whl), in device calls of < 10 minutes:
#   bash bench_results/probes_2026-11-30i/next_session.sh tests OUT  # the GPU tests of hlru_scan_time_last (never run
#                                                                    # on a GPU as an op; its probe kernels were), the
#                                                                    # compiled-decode test in its final version, the
#                                                                    # decode kernels' GPU tests (~3 min)
#   bash bench_results/probes_2026-11-30i/next_session.sh scan OUT   # bench_scan.py's full table on the final kernels
#                                                                    # (m = 1 rows with the time-last columns, fla and
#                                                                    # accelerated-scan), for bench_scan_h200.json
#   bash bench_results/probes_2026-11-30i/next_session.sh models OUT # H-LRU m = 1 and 2, time-first against time-last
#                                                                    # (config.scan_layout), eager and captured steps:
#                                                                    # decides the default of scan_layout
set -u
part=$1; out=$2
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONPATH=.:/tmp/site
case "$part" in
  tests)
    timeout -s INT -k 15 500 python3 -m pytest -q -p no:cacheprovider -n 8 tests/test_scan_time_last.py \
      tests/test_decode_triton.py "tests/test_models_gpu.py::test_compiled_captured_decode_steps_equal_eager_and_keep_the_fused_kernel" \
      2>&1 | tail -n 30 | tee "$out/gpu_tests.txt" ;;
  scan)
    timeout 560 python3 scripts/bench_scan.py --no-ref --no-warp --no-model --out "$out/bench_scan.json" 2>&1 \
      | grep -v Warn | tee "$out/bench_scan.txt" ;;
  models)
    MODELS=hlru1,hlru1-time-last,hlru2,hlru2-time-last bash scripts/run_h200.sh models "$out/eager"
    MODELS=hlru1,hlru1-time-last,hlru2,hlru2-time-last MODEL_CUDA_GRAPH=1 bash scripts/run_h200.sh models "$out/captured" ;;
  *) echo "part must be tests, scan or models, got $part"; exit 2 ;;
esac
