#!/usr/bin/env bash
# after the readout-dtype / training-ids-check / train.py-loss changes: whole-model rows, the host probe against
# 0a2f8fb, and train.py with transformers-style float32 loss vs the one-kernel loss
out=$1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONUNBUFFERED=1
PYTHONPATH=.:/tmp/site timeout 200 python3 scripts/bench_scan.py --only-model --out $out/bench_models.json 2>&1 \
  | grep -v "Warn\|warn" | tail -n 12 | tee $out/bench_models.txt
for v in base head; do
  code=.prof/base; [ $v = head ] && code=.
  PYTHONPATH=$code:/tmp/site timeout 70 python3 .prof/model_host_probe.py $v $out/host.json hlru2 bdlru4 llama 2>&1 \
    | grep -v "Warn\|warn" | tee -a $out/host.txt
done
args=(scripts/train.py --task lm --model_type hlru --block_size 1024 --per_device_train_batch_size 16
  --max_steps 60 --logging_steps 20 --eval_steps 60 --learning_rate 1e-3 --warmup_steps 10 --mixed_precision bf16
  --data_cache_dir runs/ab/data_cache --per_device_eval_batch_size 32 --max_eval_samples 64 --sample_max_new_tokens 5
  --no_plot)
for loss in torch default; do
  over=hidden_size=768,num_hidden_layers=12,order=2; [ $loss = torch ] && over=$over,loss_backend=torch
  PYTHONPATH=.:/tmp/site timeout 110 python3 "${args[@]}" --config_overrides $over --output_dir runs/ab/$loss 2>&1 \
    | grep -E "^done|Error" | tee -a $out/train_ab.txt
  python3 -c "import json; rows=[json.loads(l) for l in open('runs/ab/$loss/metrics.jsonl')]; print('$loss', [round(r['steps_per_s'], 3) for r in rows if r.get('kind') == 'train'])" | tee -a $out/train_ab.txt
done
