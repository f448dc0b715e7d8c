#!/usr/bin/env bash
# What was run on the H200 (device tool) for the numbers in README.md, in two parts of < 10 minutes each:
#   bash scripts/run_h200.sh tests OUTDIR   # GPU tests and the generation benchmark
#   bash scripts/run_h200.sh bench OUTDIR   # scripts/bench_scan.py (kernels, fla comparison, mixer layer)
# The machine has torch, Triton and transformers but no network: carry .whl/ with wheels of what it lacks
# (python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 -d .whl fla-core==0.6.0 ...).
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
if [ "$part" = tests ]; then
  timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_scan_triton_gpu.py tests/test_models_gpu.py \
    tests/test_models_triton_backend.py 2>&1 | tail -n 40 > "$out/gpu_tests.txt"
  timeout 150 python3 scripts/bench_generate.py --out "$out/bench_generate.json" 2>&1 | tail -n 150 > "$out/bench_generate.txt"
else
  timeout 520 python3 scripts/bench_scan.py --out "$out/bench_scan.json" 2>&1 | tee "$out/bench_scan.txt"
fi
ls -la "$out"
