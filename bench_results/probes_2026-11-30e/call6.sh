#!/usr/bin/env bash
out=$1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONUNBUFFERED=1
PYTHONPATH=.:/tmp/site timeout 90 python3 .prof/loss_ab.py 2>&1 | grep -v "Warn\|warn" | tee $out/loss_ab.txt
PYTHONPATH=.:/tmp/site timeout 270 python3 -m pytest -q -p no:cacheprovider -n 8 tests/test_models_gpu.py \
  tests/test_models_triton_backend.py tests/test_decoding.py tests/test_lm_loss.py 2>&1 | tail -n 15 > $out/gpu_tests_models.txt
tail -3 $out/gpu_tests_models.txt
