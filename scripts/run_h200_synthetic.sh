#!/usr/bin/env bash
# What ran on the H200 (device tool) for docs/results.md, in parts of < 10 minutes each:
#   bash scripts/run_h200_synthetic.sh mad   OUTDIR   # speed probe + MAD sweep (resumes runs/mad if carried)
#   bash scripts/run_h200_synthetic.sh state OUTDIR   # state tracking across m (resumes runs/state if carried)
# The machine has no network: carry .whl/ with wheels of datasets 5.2, dill and multiprocess for Python 3.12
# (python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 -d .whl ...).
# Each part leaves OUTDIR/<part>.tar.gz: every run's results.json, metrics.jsonl and train.log (no weights),
# to unpack into runs/ here and carry back for the next part.
set -u
part=${1:-mad}
out=${2:-${OUT:-h200_out}}
minutes=${MINUTES:-7}
mkdir -p "$out" runs
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/gpu.txt"
python3 -c "import torch, triton, transformers, accelerate, datasets; print(torch.__version__, triton.__version__, transformers.__version__, accelerate.__version__, datasets.__version__)" >> "$out/gpu.txt"
models=(--model hlru:order=1 --model hlru:order=2 --model hlru:order=4 --model bdlru:block_size=1 --model bdlru:block_size=2 --model bdlru:block_size=4)
if [ "$part" = mad ]; then
  [ -n "${SKIP_SPEED:-}" ] || {
  # one process alone at the MAD baseline shape (B128, T127, d128), no early stop: steps/s and GPU utilisation
  python3 scripts/mad.py --model hlru:order=2 --tasks in_context_recall --variants baseline --learning_rates 1e-3 \
    --weight_decays 0 --num_epochs 10 --stop_at_accuracy 0 --mixed_precision bf16 --output_dir runs/speed_1proc \
    2>&1 | tail -n 12 > "$out/speed_1proc.txt"; }
  timeout 560 python3 scripts/mad.py "${models[@]}" --variants baseline --learning_rates ${LRS:-1e-3,5e-4} \
    --weight_decays ${WDS:-0,0.1} --num_epochs ${EPOCHS:-50} --mixed_precision bf16 --parallel ${PARALLEL:-12} \
    --time_budget_minutes "$minutes" --output_dir runs/mad 2>&1 | tail -n 40 > "$out/mad.txt"
  tar czf "$out/mad.tar.gz" --exclude='checkpoints' --exclude='*.safetensors' --exclude='*.py' --exclude='data_cache' runs/mad $(ls -d runs/speed_1proc 2>/dev/null)
else
  groups=(--problem group=S3 --problem group=S4 --problem group=S5 --problem group=Z60)
  timeout 560 python3 scripts/state_tracking.py --model hlru:order=1 --model hlru:order=2 --model hlru:order=4 \
    --model bdlru:block_size=2 --model bdlru:block_size=3,num_blocks=42 --model bdlru:block_size=4 \
    --model bdlru:block_size=5,num_blocks=25 --model bdlru:block_size=8 "${groups[@]}" \
    --learning_rates ${LRS:-1e-3,3e-3} --num_epochs ${EPOCHS:-30} --mixed_precision bf16 --parallel ${PARALLEL:-12} \
    --time_budget_minutes "$minutes" --extra_args="--eval_steps ${EVAL_STEPS:-780}" --output_dir runs/state 2>&1 | tail -n 60 > "$out/state.txt"
  tar czf "$out/state.tar.gz" --exclude='checkpoints' --exclude='*.safetensors' --exclude='*.py' --exclude='data_cache' runs/state
fi
ls -la "$out"
