# Host time of generate() per new token with the captured decode step (cProfile), batch 1, context 128.
import cProfile, importlib.util, pstats, sys, torch
sys.path.insert(0, ".")
spec = importlib.util.spec_from_file_location("bench_generate", "scripts/bench_generate.py")
bg = importlib.util.module_from_spec(spec); spec.loader.exec_module(bg)
dev = torch.device("cuda")
model = bg.build("hlru-m2", False, 50304).to(dev, torch.bfloat16).eval()
ids = torch.randint(3, 50304, (1, 128), device=dev)
kw = dict(attention_mask=torch.ones_like(ids), max_new_tokens=129, min_new_tokens=129, do_sample=False, pad_token_id=0)
with torch.no_grad():
    model.generate(ids, **kw)
    model.generate(ids, **kw)
    torch.cuda.synchronize()
    pr = cProfile.Profile(); pr.enable()
    model.generate(ids, **kw)
    torch.cuda.synchronize()
    pr.disable()
st = pstats.Stats(pr); st.sort_stats("tottime").print_stats(45)
st.sort_stats("cumulative").print_stats(60)
