"""Where the host's time goes in a whole-model training step (H200 side): torch.profiler CPU self time per op and the
number of kernel launches per step, then cProfile's Python functions by own time. OPT=fused: fused AdamW.
usage: python host_profile.py MODEL OUT_PREFIX  (hf_lrnn from PYTHONPATH)"""
import cProfile, os, pstats, sys
import torch
from torch.profiler import ProfilerActivity, profile
from transformers import AutoModelForCausalLM, LlamaConfig
import hf_lrnn  # noqa: F401
from hf_lrnn import BDLRUConfig, HLRUConfig

name, prefix = sys.argv[1], sys.argv[2]
d, layers, mlp, vocab, B, T = 768, 12, 2048, 50304, 8, 2048
common = dict(vocab_size=vocab, hidden_size=d, num_hidden_layers=layers, intermediate_size=mlp)
if name == "llama":
    config = LlamaConfig(num_attention_heads=12, attn_implementation="sdpa", tie_word_embeddings=True, **common)
else:
    m = int(name[-1])
    config = HLRUConfig(order=m, **common) if name.startswith("hlru") else BDLRUConfig(block_size=m, **common)
torch.manual_seed(0)
model = AutoModelForCausalLM.from_config(config).cuda()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=os.environ.get("OPT") == "fused")
ids = torch.randint(0, vocab, (B, T), device="cuda")
def step():
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(ids, labels=ids, use_cache=False).loss
    loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
for _ in range(5): step()
torch.cuda.synchronize()
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
    for _ in range(3): step()
    torch.cuda.synchronize()
with open(prefix + "_ops.txt", "w") as f:
    events = prof.key_averages()
    launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cuLaunchKernelEx",
                                                         "cudaLaunchKernelExC"))
    kernels = sum(e.count for e in events if getattr(e, "device_type", None) is not None
                  and str(e.device_type).endswith("CUDA") and e.self_device_time_total > 0)
    f.write(f"{name} OPT={os.environ.get('OPT', 'foreach')}: kernel launches per step {launches / 3:.0f}, "
            f"GPU kernels per step {kernels / 3:.0f}\n")
    f.write(events.table(sort_by="self_cpu_time_total", row_limit=45, max_name_column_width=60))
cp = cProfile.Profile()
torch.cuda.synchronize()
cp.enable()
for _ in range(10): step()
torch.cuda.synchronize()
cp.disable()
with open(prefix + "_py.txt", "w") as f:
    st = pstats.Stats(cp, stream=f); st.sort_stats("tottime").print_stats(45)
    st.sort_stats("cumulative").print_stats(60)
print(open(prefix + "_ops.txt").read().splitlines()[0])
