"""Decoding through `generate()`, side by side in one run: H-LRU m=2 and BD-LRU m=4 (eager decode steps, and the
captured CUDA-graph steps generate() uses by default on CUDA), transformers' Llama (dynamic cache; static cache +
torch.compile) and transformers' Mamba, all about 125M parameters (d = 768, 12 blocks, vocabulary 50304).

Rows:
Modes of ours: "eager" (decode_graph=False, disable_compile=True), "transformers-compile" (decode_graph=False:
transformers compiles the decode step because the cache is compileable, and inductor records it in CUDA graphs, the
cache's states being static addresses), "cuda-graph" (the default: hf_lrnn's own captured step), "cuda-graph+compile"
(decode_graph="compile": the same captured step as torch.compile generates it; batch 1 and 64 only, one compilation
per batch size).

* batch 1: milliseconds per new token at each context length. A token's cost is isolated from the prompt's:
  (time of generate(prompt, max_new_tokens = 1 + N) - time of generate(prompt, max_new_tokens = 1)) / N, with
  N = --steps x max(1, context // 8192) (more tokens after long prompts, whose prefill time varies between runs).
* batch 64 and 256 (context 128): new tokens per second, (B * N) / the same time difference.
* time to first token for a 32K-token prompt: generate(prompt, max_new_tokens=1), batch 1.
Greedy decoding with max_new_tokens alone, every model's end-of-sequence id unset so that every run decodes exactly
that many tokens (checked). --min_new_tokens keeps the ids and passes min_new_tokens = max_new_tokens instead, the
protocol of the runs up to 2026-11-30: it adds transformers' MinNewTokensLengthLogitsProcessor (an inspect.signature
call and a few small tensor ops per token), which a user who passes only max_new_tokens does not pay. On a 2-core
CPU with the graph's replay a no-op, generate()'s host work per token after the replay went from ~345 to ~150 us
without it (transformers 5.17 and 5.24); on a GPU that work overlaps the replay (0.45-0.55 ms at batch 1) except for
its small kernels, queued behind the replay, and wherever the host is slower than the replay.

    python scripts/bench_generate.py --out bench_generate.json            # the H200 run (bf16)
    python scripts/bench_generate.py --device cpu --small --quick         # a smoke run on CPU

Writes JSON (--out: rows with model, mode, context, batch, ms_per_token, tokens_per_s) and a PNG next to it.
"""

import argparse
import json
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM, MambaConfig, MambaForCausalLM

from hf_lrnn import BDLRUConfig, BDLRUForCausalLM, HLRUConfig, HLRUForCausalLM


def build(name: str, small: bool, vocab_size: int):
    d, layers, mlp = (128, 4, 352) if small else (768, 12, 2048)
    common = dict(vocab_size=vocab_size, hidden_size=d, num_hidden_layers=layers)
    if name == "hlru-m2":
        return HLRUForCausalLM(HLRUConfig(order=2, intermediate_size=mlp, **common))
    if name == "bdlru-m4":
        return BDLRUForCausalLM(BDLRUConfig(block_size=4, intermediate_size=mlp, **common))
    if name == "llama":
        heads = 4 if small else 12
        return LlamaForCausalLM(LlamaConfig(num_attention_heads=heads, num_key_value_heads=heads, intermediate_size=mlp,
                                            max_position_embeddings=65536, attn_implementation="sdpa",
                                            tie_word_embeddings=True, **common))
    if name == "mamba":  # 24 blocks without MLPs: about the parameters of the others
        return MambaForCausalLM(MambaConfig(vocab_size=vocab_size, hidden_size=d, num_hidden_layers=2 * layers))
    raise ValueError(name)


# (model, mode): generate() keyword arguments
MODES = {
    ("hlru-m2", "eager"): dict(decode_graph=False, disable_compile=True),
    ("hlru-m2", "transformers-compile"): dict(decode_graph=False),  # transformers compiles the step (cache compileable)
    ("hlru-m2", "cuda-graph"): {},
    ("hlru-m2", "cuda-graph+compile"): dict(decode_graph="compile"),  # the captured step as inductor compiled it
    ("bdlru-m4", "eager"): dict(decode_graph=False, disable_compile=True),
    ("bdlru-m4", "transformers-compile"): dict(decode_graph=False),
    ("bdlru-m4", "cuda-graph"): {},
    ("bdlru-m4", "cuda-graph+compile"): dict(decode_graph="compile"),
    ("llama", "dynamic"): {},
    ("llama", "static+compile"): dict(cache_implementation="static"),
    ("mamba", "eager"): {},
}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def without_end_of_sequence(model):
    """Unset the end-of-sequence id, so that generate() always decodes max_new_tokens (random weights emit any id)."""
    model.generation_config.eos_token_id = None
    return model


@torch.no_grad()
def timed_generate(model, ids, new_tokens, device, min_new_tokens=False, **kwargs):
    """Seconds of one greedy generate() of `new_tokens` tokens after `ids` (min_new_tokens: the old protocol)."""
    if min_new_tokens:
        kwargs["min_new_tokens"] = new_tokens
    sync(device)
    start = time.perf_counter()
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, do_sample=False,
                         pad_token_id=0, **kwargs)
    sync(device)
    seconds = time.perf_counter() - start
    if out.shape[1] != ids.shape[1] + new_tokens:
        raise RuntimeError(f"generate() decoded {out.shape[1] - ids.shape[1]} tokens, not {new_tokens}: the timing "
                           "per token would be wrong")
    return seconds


def decode_seconds(model, batch, context, steps, device, kwargs):
    """Seconds for `steps` new tokens after the first, prompt excluded (median of 3 differences)."""
    ids = torch.randint(3, model.config.vocab_size, (batch, context), device=device)
    timed_generate(model, ids, steps + 1, device, **kwargs)  # warm-up: kernels, graphs, compilation
    diffs = []
    for _ in range(3):
        diffs.append(timed_generate(model, ids, steps + 1, device, **kwargs)
                     - timed_generate(model, ids, 1, device, **kwargs))
    return sorted(diffs)[1]


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    single = [r for r in rows if r["batch"] == 1 and r.get("ms_per_token")]
    for label in dict.fromkeys(f"{r['model']} {r['mode']}" for r in single):
        pts = [r for r in single if f"{r['model']} {r['mode']}" == label]
        ax1.plot([r["context"] for r in pts], [r["ms_per_token"] for r in pts], marker="o", label=label)
    ax1.set(xscale="log", yscale="log", xlabel="context (tokens)", ylabel="ms per new token (batch 1)")
    batched = [r for r in rows if r["batch"] > 1]
    labels = list(dict.fromkeys(f"{r['model']} {r['mode']}" for r in batched))
    for i, batch in enumerate(sorted({r["batch"] for r in batched})):
        values = [next((r["tokens_per_s"] for r in batched if r["batch"] == batch
                        and f"{r['model']} {r['mode']}" == label), 0) for label in labels]
        ax2.barh([j + 0.4 * i for j in range(len(labels))], values, height=0.4, label=f"batch {batch}")
    ax2.set(yticks=range(len(labels)), yticklabels=labels, xlabel="new tokens / s (context 128)", xscale="log")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--small", action="store_true", help="small models (CPU smoke runs)")
    parser.add_argument("--quick", action="store_true", help="fewer contexts, batches and steps")
    parser.add_argument("--models", default=",".join(dict.fromkeys(m for m, _ in MODES)))
    parser.add_argument("--modes", default=None, help="only these modes, comma-separated (default: all)")
    parser.add_argument("--contexts", default=None, help="batch-1 context lengths, comma-separated")
    parser.add_argument("--batches", default=None, help="batch sizes at context 128, comma-separated")
    parser.add_argument("--steps", type=int, default=64, help="new tokens timed per run")
    parser.add_argument("--ttft_context", type=int, default=32768, help="prompt length for time to first token (0: off)")
    parser.add_argument("--min_new_tokens", action="store_true", help="keep the end-of-sequence ids and pass "
                        "min_new_tokens = max_new_tokens (the protocol of the runs up to 2026-11-30)")
    parser.add_argument("--out", default="bench_generate.json")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    contexts = [int(c) for c in (args.contexts or ("128,2048" if args.quick else "128,2048,32768")).split(",")]
    batches = [int(b) for b in (args.batches or ("64" if args.quick else "64,256")).split(",")]
    wanted = args.models.split(",")
    rows = []
    info = dict(device=torch.cuda.get_device_name() if device.type == "cuda" else "cpu", dtype=str(dtype),
                torch=torch.__version__, steps=args.steps,
                protocol="min_new_tokens = max_new_tokens" if args.min_new_tokens
                else "max_new_tokens alone, no end-of-sequence id")
    print(f"{'model':<10} {'mode':<15} {'batch':>5} {'context':>7} {'ms/token':>9} {'tokens/s':>10}")
    for name in dict.fromkeys(m for m, _ in MODES):
        if name not in wanted:
            continue
        torch.manual_seed(0)
        model = build(name, args.small, 4096 if args.small else 50304).to(device=device, dtype=dtype).eval()
        if not args.min_new_tokens:
            without_end_of_sequence(model)
        params = sum(p.numel() for p in model.parameters())
        for (model_name, mode), kwargs in MODES.items():
            if model_name != name or (args.modes and mode not in args.modes.split(",")):
                continue
            kwargs = dict(kwargs, min_new_tokens=args.min_new_tokens)
            for batch, context in [(1, c) for c in contexts] + [(b, 128) for b in batches]:
                if name == "mamba" and (context > 2048 or batch > 64):
                    continue  # transformers' Mamba without its CUDA kernels: minutes per run
                if mode == "static+compile" and (batch, context) not in ((1, 2048), (64, 128)):
                    continue  # every static-cache length compiles anew (about a minute): context 2048, and batch 64
                if mode == "cuda-graph+compile" and batch > 64:
                    continue  # a compilation per batch size
                try:
                    # long prompts: more new tokens, so that the prefill's run-to-run jitter (which the difference
                    # of two generate() calls keeps) weighs less per token
                    steps = args.steps * max(1, context // 8192)
                    seconds = decode_seconds(model, batch, context, steps, device, kwargs)
                    row = dict(model=name, mode=mode, params=params, batch=batch, context=context, steps=steps,
                               ms_per_token=seconds / steps * 1e3, tokens_per_s=batch * steps / seconds)
                except Exception as error:  # noqa: BLE001  (a peer that cannot run a row: say so, go on)
                    row = dict(model=name, mode=mode, params=params, batch=batch, context=context,
                               note=f"{type(error).__name__}: {str(error)[:200]}")
                rows.append(row)
                if "note" in row:
                    print(f"{name:<10} {mode:<15} {batch:>5} {context:>7}  {row['note']}", flush=True)
                else:
                    print(f"{name:<10} {mode:<15} {batch:>5} {context:>7} {row['ms_per_token']:9.3f} "
                          f"{row['tokens_per_s']:10.0f}", flush=True)
            if args.ttft_context and name != "mamba" and mode in ("cuda-graph", "dynamic"):
                ids = torch.randint(3, model.config.vocab_size, (1, args.ttft_context), device=device)
                timed_generate(model, ids[:, :1024], 1, device, **kwargs)
                seconds = min(timed_generate(model, ids, 1, device, **kwargs) for _ in range(2))
                rows.append(dict(model=name, mode=mode, params=params, batch=1, context=args.ttft_context,
                                 ttft_ms=seconds * 1e3))
                print(f"{name:<10} {mode:<15} {1:>5} {args.ttft_context:>7}  time to first token {seconds * 1e3:.1f} ms",
                      flush=True)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
        with open(args.out, "w") as f:  # after every model: a run stopped early keeps what it measured
            json.dump({**info, "rows": rows}, f, indent=1)
    png = args.out.rsplit(".", 1)[0] + ".png"
    plot(rows, png)
    print(f"wrote {args.out} and {png}")


if __name__ == "__main__":
    main()
