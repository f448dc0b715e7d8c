#!/usr/bin/env bash
out=$1
export PYTHONUNBUFFERED=1
for v in base2 new3 base2 new3; do
  PYTHONPATH=.prof/$v timeout 45 python3 .prof/model_host_probe.py $v $out/host.json hlru2 2>&1 | grep -v "Warn\|warn" | tee -a $out/host.txt
done
