"""Profile one training step of the bench_scan model rows: where the GPU time goes (top kernels, categories)."""
import json, os, sys, time
import torch
from torch.profiler import profile, ProfilerActivity
from transformers import AutoModelForCausalLM, LlamaConfig
sys.path.insert(0, ".")
from hf_lrnn import BDLRUConfig, HLRUConfig

out = sys.argv[1]
d, layers, mlp, vocab, B, T = 768, 12, 2048, 50304, 8, 2048
common = dict(vocab_size=vocab, hidden_size=d, num_hidden_layers=layers, intermediate_size=mlp)
configs = {"bdlru m=4": BDLRUConfig(block_size=4, **common), "bdlru m=2": BDLRUConfig(block_size=2, **common),
           "llama": LlamaConfig(num_attention_heads=12, attn_implementation="sdpa", tie_word_embeddings=True, **common)}
res = {}
def cat(name):
    n = name.lower()
    if "_hlru_" in n or "_bdlru_" in n or "first_order" in n or "_carry" in n: return "scan"
    if "gemm" in n or "cutlass" in n or "sm90" in n or "nvjet" in n or "cublas" in n or "xmma" in n: return "gemm"
    if "flash" in n or "fmha" in n or "attention" in n: return "attention"
    if "multi_tensor" in n or "adam" in n: return "optimizer"
    if "reduce" in n: return "reduce"
    if "elementwise" in n or "vectorized" in n or "unrolled" in n: return "elementwise"
    if "copy" in n or "memcpy" in n or "memset" in n or "fill" in n: return "copy/fill"
    return "other"
for name, config in configs.items():
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, vocab, (B, T), device="cuda")
    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(ids, labels=ids, use_cache=False).loss
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
    for _ in range(3): step()
    torch.cuda.synchronize(); t0 = time.perf_counter()
    for _ in range(5): step()
    torch.cuda.synchronize(); ms = (time.perf_counter() - t0) / 5 * 1e3
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(2): step()
        torch.cuda.synchronize()
    kern = {}
    for e in prof.key_averages():
        if e.device_type.name == "CUDA" or getattr(e, "self_device_time_total", 0) > 0:
            t = getattr(e, "self_device_time_total", 0) / 2 / 1e3  # ms per step
            if t > 0: kern[e.key] = kern.get(e.key, 0) + t
    cats = {}
    for k, t in kern.items(): cats[cat(k)] = cats.get(cat(k), 0) + t
    top = sorted(kern.items(), key=lambda x: -x[1])[:30]
    res[name] = dict(step_ms=ms, gpu_ms=sum(kern.values()), cats=cats, top=top)
    print(f"== {name}: step {ms:.1f} ms wall, {sum(kern.values()):.1f} ms GPU kernels")
    print("   " + ", ".join(f"{c} {t:.1f}" for c, t in sorted(cats.items(), key=lambda x: -x[1])))
    for k, t in top: print(f"   {t:7.2f} ms  {cat(k):11s} {k[:110]}")
    del model, opt; torch.cuda.empty_cache()
json.dump(res, open(os.path.join(out, "model_prof.json"), "w"), indent=1)
