import os

import pytest
import torch

# Tests run on CPU; the reference backend unless a test asks for Triton explicitly. Without CUDA, Triton
# kernels run in its interpreter, which must be switched on before anything imports triton (hf_lrnn does).
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import hf_lrnn  # noqa: E402, F401  (registers the Auto classes)

# Shared helpers (tiny models, tokenizers, script runners) are in helpers.py, imported explicitly by the tests.

@pytest.fixture(params=["hlru", "bdlru"])
def arch(request):
    return request.param
