"""cProfile of generate()'s per-token host path on CPU (scan_backend="torch", the captured step's replay a no-op): which
Python runs between tokens.  python bench_results/probes_2026-11-30h/token_profile.py"""
import cProfile, pstats, io, os, time
os.environ.setdefault("TRITON_INTERPRET", "1")
import torch, hf_lrnn
from hf_lrnn.modeling_lrnn import LRNNForCausalLM
from transformers import AutoModelForCausalLM
class NoopGraph:
    def __init__(self, device, pool=None): self.pool = pool
    def capture(self, step): return step()
    def replay(self): pass
LRNNForCausalLM.decode_graph_class = NoopGraph
LRNNForCausalLM._can_use_decode_graphs = lambda self: True
cfg = hf_lrnn.HLRUConfig(vocab_size=512, hidden_size=32, num_hidden_layers=12, order=2, intermediate_size=32, scan_backend="torch")
model = AutoModelForCausalLM.from_config(cfg).eval()
model.generation_config.eos_token_id = None
ids = torch.randint(3, 500, (1, 8))
model.generate(ids, max_new_tokens=3, do_sample=False)
N = 400
out = model.generate(ids, max_new_tokens=2, do_sample=False)
pr = cProfile.Profile()
# profile only the decode loop: generate with many tokens; prefill is a small part
pr.enable(); model.generate(ids, max_new_tokens=N, do_sample=False); pr.disable()
s = io.StringIO(); pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(35); print(s.getvalue()[:7000])
