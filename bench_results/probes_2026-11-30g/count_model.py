"""aten ops per LRNNBlock forward+backward (CPU, autocast bf16, Triton interpreter for scans and norms)."""
import os, sys, collections
os.environ.setdefault("TRITON_INTERPRET", "1")
import torch
from torch.utils._python_dispatch import TorchDispatchMode
import hf_lrnn
from transformers import AutoModelForCausalLM

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

for name, cfg in (("hlru2", hf_lrnn.HLRUConfig(vocab_size=64, hidden_size=64, num_hidden_layers=4, order=2, scan_backend="triton")),
                  ("bdlru4", hf_lrnn.BDLRUConfig(vocab_size=64, hidden_size=64, num_hidden_layers=4, block_size=4, scan_backend="triton"))):
    model = AutoModelForCausalLM.from_config(cfg)
    ids = torch.randint(3, 60, (2, 16))
    for phase in ("warm", "count"):
        launches.clear()
        with Count() as c:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = model(ids, labels=ids).loss
            loss.backward()
            model.zero_grad(set_to_none=True)
    device_ops = {k: v for k, v in c.ops.items() if k not in ("view", "t", "_unsafe_view", "detach", "expand", "slice", "select", "empty", "empty_like", "new_empty", "reshape", "as_strided", "unsqueeze", "transpose", "permute", "promote_types", "alias", "squeeze", "unbind", "split")}
    print(name, "4 layers: kernels", sum(device_ops.values()) + sum(launches.values()), "aten", sorted(device_ops.items(), key=lambda kv: -kv[1]), "triton", sum(launches.values()))
