"""aten ops per LRNNBlock forward+backward (CPU, autocast bf16, Triton interpreter for scans and norms)."""
import os, sys, collections
os.environ.setdefault("TRITON_INTERPRET", "1")
import torch
from torch.utils._python_dispatch import TorchDispatchMode
import hf_lrnn
from hf_lrnn.modeling_lrnn import LRNNBlock

import triton.runtime.interpreter as ti
inside = [0]; launches = collections.Counter()
orig_run = ti.InterpretedFunction.run
def run(self, *a, **k):
    inside[0] += 1; launches[self.fn.__name__] += 1
    try: return orig_run(self, *a, **k)
    finally: inside[0] -= 1
ti.InterpretedFunction.run = run
class Count(TorchDispatchMode):
    def __init__(self): super().__init__(); self.ops = collections.Counter()
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not inside[0]: self.ops[str(func.overloadpacket.__name__)] += 1
        return func(*args, **(kwargs or {}))

for name, cfg in (("hlru2", hf_lrnn.HLRUConfig(vocab_size=64, hidden_size=64, num_hidden_layers=1, order=2, scan_backend="triton")),
                  ("bdlru4", hf_lrnn.BDLRUConfig(vocab_size=64, hidden_size=64, num_hidden_layers=1, block_size=4, scan_backend="triton"))):
    block = LRNNBlock(cfg, 0, blocked=name.startswith("bd"))
    x = torch.randn(2, 16, 64, requires_grad=True)
    for phase in ("warm", "count"):
        launches.clear()
        with Count() as c:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                y = block(x)
            y.float().sum().backward()
    print(name, sum(c.ops.values()), dict(launches), sorted(c.ops.items(), key=lambda kv: -kv[1]))
