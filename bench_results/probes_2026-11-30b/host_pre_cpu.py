# Host time on CPU from prepare_inputs_for_generation to the captured step's replay (the part of a decode step that
# the GPU waits for at batch 1: generate() syncs before it), median over 300 tokens. The replay does nothing here.
import statistics, sys, time, torch
sys.path.insert(0, "."); sys.path.insert(0, "tests")
from helpers import tiny_model
from hf_lrnn.modeling_lrnn import LRNNForCausalLM
marks = []


class NoopGraph:
    def __init__(self, device, pool=None):
        self.pool = pool
    def capture(self, step):
        return step()
    def replay(self):
        marks.append(("replay", time.perf_counter()))


LRNNForCausalLM.decode_graph_class = NoopGraph
LRNNForCausalLM._can_use_decode_graphs = lambda self: True
import functools
prepare = LRNNForCausalLM.prepare_inputs_for_generation
@functools.wraps(prepare)
def timed_prepare(self, *a, **k):
    marks.append(("prepare", time.perf_counter()))
    return prepare(self, *a, **k)
LRNNForCausalLM.prepare_inputs_for_generation = timed_prepare
torch.set_num_threads(1)
model = tiny_model("hlru", m=2, num_hidden_layers=12).eval()
ids = torch.randint(3, model.config.vocab_size, (1, 16))
kw = dict(max_new_tokens=301, do_sample=False, pad_token_id=0, attention_mask=torch.ones_like(ids))
res = []
for _ in range(5):
    marks.clear()
    model.generate(ids, **kw)
    d = [b[1] - a[1] for a, b in zip(marks, marks[1:]) if a[0] == "prepare" and b[0] == "replay"]
    res.append(statistics.median(d) * 1e6)
print(f"prepare -> replay, median per token: {min(res):.1f} us (runs: {', '.join(f'{r:.0f}' for r in res)})")
