#!/usr/bin/env bash
# One device call: the probe at main (Triton norms merged) with torch's default AdamW and with fused AdamW, then
# host profiles of H-LRU m = 2 and Llama.   bash bench_results/probes_2026-11-30g/call1.sh OUT
set -u
out=$1; here=bench_results/probes_2026-11-30g
export PYTHONUNBUFFERED=1 PYTHONPATH=.
for round in 1 2; do
  for opt in foreach fused; do
    OPT=$opt timeout 80 python3 $here/model_host_probe.py $opt $out/probe.json hlru2 bdlru4 llama 2>&1 \
      | grep -v "Warn\|warn" | tee -a $out/probe.txt
  done
done
for m in hlru2 bdlru4; do
  OPT=fused timeout 90 python3 $here/host_profile.py $m $out/$m 2>&1 | grep -v "Warn\|warn" | tail -n 3
done
OPT=fused timeout 90 python3 $here/host_profile.py llama $out/llama 2>&1 | tail -n 2
