# Host cost of generate() per token around a replayed step, on CPU: the graph's replay does nothing, so what is timed
# is Python (transformers' loop, our forward and step). Usage: python .prof/host_decode_cpu.py [profile]
import cProfile, pstats, sys, time, torch
sys.path.insert(0, "."); sys.path.insert(0, "tests")
from helpers import tiny_model
from hf_lrnn.modeling_lrnn import LRNNForCausalLM


class NoopGraph:
    def __init__(self, device, pool=None):
        self.pool = pool
    def capture(self, step):
        return step()
    def replay(self):
        pass


LRNNForCausalLM.decode_graph_class = NoopGraph
LRNNForCausalLM._can_use_decode_graphs = lambda self: True
torch.set_num_threads(1)
model = tiny_model("hlru", m=2, num_hidden_layers=12).eval()
cfg_layers = model.config.num_hidden_layers
ids = torch.randint(3, model.config.vocab_size, (1, 16))
kw = dict(max_new_tokens=301, min_new_tokens=301, do_sample=False, pad_token_id=0, attention_mask=torch.ones_like(ids))
model.generate(ids, **kw)
best = 1e9
for _ in range(3):
    t0 = time.perf_counter(); model.generate(ids, **kw); t1 = time.perf_counter()
    kw1 = dict(kw, max_new_tokens=1, min_new_tokens=1)
    t2 = time.perf_counter(); model.generate(ids, **kw1); t3 = time.perf_counter()
    best = min(best, ((t1 - t0) - (t3 - t2)) / 300)
print(f"{cfg_layers} layers: host per token {best * 1e6:.0f} us", flush=True)
if len(sys.argv) > 1:
    pr = cProfile.Profile(); pr.enable(); model.generate(ids, **kw); pr.disable()
    pstats.Stats(pr).sort_stats("tottime").print_stats(30)
