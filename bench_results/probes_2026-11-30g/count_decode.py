"""aten ops and Triton launches per decode step (one token through the model with its cache), CPU interpreter."""
import os, sys, collections
os.environ.setdefault("TRITON_INTERPRET", "1")
import torch
from torch.utils._python_dispatch import TorchDispatchMode
import triton.runtime.interpreter as ti
import hf_lrnn
from transformers import AutoModelForCausalLM
inside = [0]; launches = collections.Counter()
orig_run = ti.InterpretedFunction.run
def run(self, *a, **k):
    inside[0] += 1; launches[self.fn.__name__] += 1
    try: return orig_run(self, *a, **k)
    finally: inside[0] -= 1
ti.InterpretedFunction.run = run
SKIP = {"view", "t", "_unsafe_view", "detach", "expand", "slice", "select", "reshape", "unsqueeze", "squeeze", "as_strided", "alias", "transpose", "permute", "empty", "empty_like", "new_empty", "empty_strided", "_reshape_alias", "unbind", "split", "lift_fresh", "promote_types", "is_same_size", "to"}
class Count(TorchDispatchMode):
    def __init__(self): super().__init__(); self.ops = collections.Counter()
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket.__name__)
        if not inside[0] and name not in SKIP: self.ops[name] += 1
        return func(*args, **(kwargs or {}))
for name, cfg in (("hlru2", hf_lrnn.HLRUConfig(vocab_size=64, hidden_size=64, num_hidden_layers=2, order=2, scan_backend="triton")),
                  ("bdlru4", hf_lrnn.BDLRUConfig(vocab_size=64, hidden_size=64, num_hidden_layers=2, block_size=4, scan_backend="triton"))):
    model = AutoModelForCausalLM.from_config(cfg).to(torch.bfloat16).eval()
    ids = torch.randint(3, 60, (1, 5))
    with torch.no_grad():
        out = model(ids, use_cache=True)
        cache = out.past_key_values
        nxt = out.logits[:, -1:].argmax(-1)
        launches.clear()
        with Count() as c:
            model(nxt, past_key_values=cache, use_cache=True)
    print(name, "per step (2 layers): aten", sum(c.ops.values()), dict(c.ops), "triton", dict(launches))
