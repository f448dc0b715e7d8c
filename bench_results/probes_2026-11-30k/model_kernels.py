"""Where a training step's GPU time goes, time-first against time-last (config.scan_layout), per kernel; and the
projection GEMMs alone in three layouts. Usage: python3 model_kernels.py OUT_DIR"""
import json
import sys
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile
from transformers import AutoModelForCausalLM

from hf_lrnn import HLRUConfig

out = sys.argv[1]
B, T, d, V = 8, 2048, 768, 50304
results, lines = {}, []
common = dict(vocab_size=V, hidden_size=d, num_hidden_layers=12, intermediate_size=2048)
for name, config in [("hlru1", HLRUConfig(order=1, **common)),
                     ("hlru1-time-last", HLRUConfig(order=1, scan_layout="time_last", **common)),
                     ("hlru2", HLRUConfig(order=2, **common)),
                     ("hlru2-time-last", HLRUConfig(order=2, scan_layout="time_last", **common))]:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    ids = torch.randint(0, V, (B, T), device="cuda")

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(ids, labels=ids, use_cache=False).loss
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            step()
        torch.cuda.synchronize()
    per_kernel = defaultdict(lambda: [0.0, 0])
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            per_kernel[e.name][0] += e.device_time_total / 3 / 1e3
            per_kernel[e.name][1] += 1
    total = sum(v[0] for v in per_kernel.values())
    top = sorted(per_kernel.items(), key=lambda kv: -kv[1][0])[:22]
    lines.append(f"== {name}: {total:.2f} ms of kernels per step")
    for k, (ms, n) in top:
        lines.append(f"  {ms:7.3f} ms  {n // 3:4d}x  {k[:150]}")
    results[name] = dict(total_ms=total, kernels={k: v for k, v in per_kernel.items()})
    del model, opt
    torch.cuda.empty_cache()


def timed(fn, reps=20):
    for _ in range(3):
        fn()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    s.record()
    for _ in range(reps):
        fn()
    e.record()
    torch.cuda.synchronize()
    return s.elapsed_time(e) / reps


# the coefficient projection of m = 2 (768 -> 2304) forward + backward, bf16, in three layouts
x = torch.randn(B, T, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
w = torch.randn(3 * d, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
variants = {
    "linear [B,T,N]": lambda: torch.nn.functional.linear(x, w),
    "bmm expand [B,N,T]": lambda: torch.bmm(w.expand(B, -1, -1), x.transpose(1, 2)),
    "matmul channel-major [N,B*T]": lambda: w @ x.view(B * T, d).t(),
}
lines.append("coefficient projection 768 -> 2304, B8 T2048 bf16: forward / forward+backward ms")
for k, f in variants.items():
    fwd = timed(f)

    def fb():
        y = f()
        y.backward(torch.ones_like(y))
        x.grad = w.grad = None
    lines.append(f"  {k:<30} {fwd:.3f} / {timed(fb):.3f}")
text = "\n".join(lines)
print(text)
open(f"{out}/model_kernels.txt", "w").write(text + "\n")
json.dump(results, open(f"{out}/model_kernels.json", "w"))
