"""generate()'s host time per new token on CPU with the captured step's replay a no-op (what the GPU's host pays
around each replay at batch 1), and with an argument cProfile's top functions.
    python bench_results/probes_2026-11-30h/host_per_token.py [profile]"""
import cProfile, pstats, sys, time, os
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
cfg = hf_lrnn.HLRUConfig(vocab_size=512, hidden_size=32, num_hidden_layers=12, order=2, intermediate_size=32, scan_backend="torch")  # the replay is a no-op: the backend only sets the prefill's cost
model = AutoModelForCausalLM.from_config(cfg).eval()
model.generation_config.eos_token_id = None
ids = torch.randint(3, 500, (1, 8))
def gen(n): return model.generate(ids, max_new_tokens=n, do_sample=False)
gen(3)
N = 400
for _ in range(3):
    t0 = time.perf_counter(); gen(1); t1 = time.perf_counter(); out = gen(1 + N); t2 = time.perf_counter()
    assert out.shape[1] == 8 + 1 + N
    print(f"host per token: {((t2 - t1) - (t1 - t0)) / N * 1e6:.0f} us")
if len(sys.argv) > 1:
    pr = cProfile.Profile(); pr.enable(); gen(1 + N); pr.disable()
    pstats.Stats(pr).sort_stats("tottime").print_stats(25)
