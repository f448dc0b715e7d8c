#!/usr/bin/env bash
# model host probe (HEAD vs readout-dtype vs readout-dtype without the input check's sync), then bench_generate
# under both protocols (same machine)
out=$1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
export PYTHONUNBUFFERED=1
for v in base new nosync base new nosync; do
  code=$v; [ $v = nosync ] && code=new
  NOSYNC=$([ $v = nosync ] && echo 1 || echo 0) PYTHONPATH=.prof/$code:/tmp/site timeout 80 \
    python3 .prof/model_host_probe.py $v $out/host.json hlru2 bdlru4 llama 2>&1 | grep -v "Warn\|warn" | tee -a $out/host.txt
done
for proto in "" "--min_new_tokens"; do
  PYTHONPATH=.:/tmp/site timeout 150 python3 scripts/bench_generate.py --models hlru-m2,bdlru-m4,llama \
    --modes cuda-graph,static+compile --contexts 128,2048 --batches 64 --ttft_context 0 --steps 32 $proto \
    --out $out/gen${proto:+_min}.json 2>&1 | grep -v "Warn\|__cudagraphs\|falling back" | tail -n 25 | tee -a $out/gen.txt
done
