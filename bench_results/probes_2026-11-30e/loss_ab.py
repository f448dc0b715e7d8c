"""Same-process A/B of train.py's loss (masked_cross_entropy, torch vs triton): the loss alone (forward+backward on
bf16 logits [16384, V]) and a whole train.py-shaped step (H-LRU m=2, d=768, 12 layers, B16 T1024, V=4096)."""
import statistics, sys, time
import torch
import hf_lrnn
from hf_lrnn.training.metrics import masked_cross_entropy

def timed(fn, n=20):
    fn(); torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(n): fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / n * 1e3

for V in (4096, 50304):
    logits = torch.randn(16, 1024, V, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    labels = torch.randint(0, V, (16, 1024), device="cuda"); labels[:, :5] = -100
    res = {}
    for rnd in range(3):
        for backend in ("torch", "triton"):
            def f():
                masked_cross_entropy(logits, labels, backend).backward()
            res.setdefault(backend, []).append(timed(f))
    print(f"loss alone V={V}: " + ", ".join(f"{b} {statistics.median(v):.3f} ms" for b, v in res.items()), flush=True)

config = hf_lrnn.HLRUConfig(vocab_size=4096, hidden_size=768, num_hidden_layers=12, order=2)
model = hf_lrnn.HLRUForCausalLM(config).cuda().train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
ids = torch.randint(0, 4096, (16, 1024), device="cuda")
res = {}
for rnd in range(4):
    for backend in ("torch", "triton"):
        def step():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = masked_cross_entropy(model(ids).logits, ids, backend)
            loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
        res.setdefault(backend, []).append(timed(step, 10))
print("train.py-shaped step (H-LRU m=2, B16 T1024, V=4096): " + ", ".join(
    f"{b} {statistics.median(v):.2f} ms (windows {', '.join(f'{x:.2f}' for x in v)})" for b, v in res.items()), flush=True)
