"""Where a whole-model training step's time goes on the GPU machine: wall per step, host time spent waiting at the
forward's one sync (Tensor.tolist: the input checks), and the GPU's kernel time per step (torch.profiler).
host-bound: wait ~ 0 and kernels << wall; GPU-bound: kernels ~ wall.
usage: python model_host_probe.py LABEL OUT.json [models...]  (hf_lrnn from PYTHONPATH)
OPT=fused: AdamW(fused=True), the Trainer's default (adamw_torch_fused); otherwise torch's default (foreach)."""
import json, os, statistics, sys, time
import torch
from torch.profiler import ProfilerActivity, profile
from transformers import AutoModelForCausalLM, LlamaConfig
import hf_lrnn
from hf_lrnn import BDLRUConfig, HLRUConfig

label, out = sys.argv[1], sys.argv[2]
names = sys.argv[3:] or ["hlru2", "bdlru4", "llama"]
d, layers, mlp, vocab, B, T = 768, 12, 2048, 50304, 8, 2048
common = dict(vocab_size=vocab, hidden_size=d, num_hidden_layers=layers, intermediate_size=mlp)
def config(name):
    if name == "llama":
        return LlamaConfig(num_attention_heads=12, attn_implementation="sdpa", tie_word_embeddings=True, **common)
    m = int(name[-1])
    return HLRUConfig(order=m, **common) if name.startswith("hlru") else BDLRUConfig(block_size=m, **common)
waited = [0.0]
orig_tolist = torch.Tensor.tolist
def timed_tolist(self):
    t0 = time.perf_counter(); r = orig_tolist(self); waited[0] += time.perf_counter() - t0; return r
torch.Tensor.tolist = timed_tolist
if os.environ.get("NOSYNC") == "1":  # the input checks' flags read as all-clear without waiting for the GPU
    torch.Tensor.tolist = lambda self: [False] * self.numel() if self.dtype == torch.bool else orig_tolist(self)
rows = []
for name in names:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config(name)).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=os.environ.get("OPT") == "fused")
    ids = torch.randint(0, vocab, (B, T), device="cuda")
    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(ids, labels=ids, use_cache=False).loss
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
    for _ in range(3): step()
    walls, waits = [], []
    for _ in range(3):
        torch.cuda.synchronize(); waited[0] = 0.0; t0 = time.perf_counter()
        for _ in range(10): step()
        t1 = time.perf_counter(); torch.cuda.synchronize(); t2 = time.perf_counter()
        walls.append((t2 - t0) / 10 * 1e3); waits.append((waited[0] + t2 - t1) / 10 * 1e3)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(3): step()
        torch.cuda.synchronize()
    gpu = sum(getattr(e, "self_device_time_total", 0) for e in prof.key_averages()) / 3 / 1e3
    i = walls.index(statistics.median(walls))
    row = dict(label=label, opt=os.environ.get("OPT", "foreach"), model=name, wall_ms=walls[i], wait_ms=waits[i], host_ms=walls[i] - waits[i],
               gpu_kernel_ms=gpu, walls=walls, waits=waits)
    rows.append(row)
    print(f"{label:6s} {name:7s} wall {walls[i]:6.1f} ms  waiting {waits[i]:5.1f}  host busy {walls[i]-waits[i]:5.1f}  "
          f"GPU kernels {gpu:5.1f}   (walls {min(walls):.1f}-{max(walls):.1f})", flush=True)
    del model, opt; torch.cuda.empty_cache()
json.dump(rows, open(out, "a"), indent=1); open(out, "a").write("\n")
