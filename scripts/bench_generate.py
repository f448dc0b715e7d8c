"""Decode cost against context length: H-LRU and BD-LRU (recurrent state) next to Llama (KV cache).

For each context length L the model first reads an L-token prompt (prefill), then decodes `--steps` tokens
one at a time through its cache; the table reports the mean latency per decoded token, the size of the
cache (state) after the prefill and the peak memory of the decode phase. A recurrent model should show a
flat line in both; Llama's latency and KV cache grow with L.

    python scripts/bench_generate.py                       # H200 defaults: ~125M models, L = 128 .. 32768
    python scripts/bench_generate.py --device cpu --small  # CPU: small models, L = 128 .. 2048

Writes JSON (--out) and a PNG plot next to it.
"""

import argparse
import json
import time

import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

from hf_lrnn import BDLRUConfig, BDLRUForCausalLM, HLRUConfig, HLRUForCausalLM
from hf_lrnn.modeling_lrnn import CACHE_FIELD


def build_models(small: bool, vocab_size: int):
    d, layers, mlp = (128, 4, 352) if small else (768, 12, 2048)
    common = dict(vocab_size=vocab_size, hidden_size=d, num_hidden_layers=layers, intermediate_size=mlp)
    heads = 4 if small else 12
    return {
        "hlru-m2": HLRUForCausalLM(HLRUConfig(order=2, **common)),
        "bdlru-m4": BDLRUForCausalLM(BDLRUConfig(block_size=4, **common)),
        "llama": LlamaForCausalLM(
            LlamaConfig(
                num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=65536,
                attn_implementation="sdpa", tie_word_embeddings=True, **common,
            )
        ),
    }


def cache_bytes(cache) -> int:
    if isinstance(cache, DynamicCache) or not hasattr(cache, "states"):
        total = 0
        for layer in cache.layers:
            for name in ("keys", "values"):
                t = getattr(layer, name, None)
                if t is not None:
                    total += t.numel() * t.element_size()
        return total
    return sum(s.numel() * s.element_size() for s in cache.states)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def measure(model, context: int, steps: int, device, prefill_chunk: int):
    ids = torch.randint(0, model.config.vocab_size, (1, context), device=device)
    cache = None
    for start in range(0, context, prefill_chunk):  # chunked prefill bounds Llama's attention memory
        kwargs = {} if cache is None else {CACHE_FIELD: cache}
        out = model(ids[:, start : start + prefill_chunk], use_cache=True, logits_to_keep=1, **kwargs)
        cache = getattr(out, CACHE_FIELD)
    state_bytes = cache_bytes(cache)
    token = out.logits[:, -1:].argmax(-1)
    for _ in range(3):  # warm-up (kernels, allocator); these tokens count towards the context
        out = model(token, use_cache=True, **{CACHE_FIELD: cache})
        cache = getattr(out, CACHE_FIELD)
        token = out.logits[:, -1:].argmax(-1)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        out = model(token, use_cache=True, **{CACHE_FIELD: cache})
        cache = getattr(out, CACHE_FIELD)
        token = out.logits[:, -1:].argmax(-1)
    sync(device)
    latency_ms = (time.perf_counter() - start) / steps * 1e3
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
    return latency_ms, state_bytes, peak


@torch.no_grad()
def profile_decode(model, context: int, steps: int, device):
    """Where one decode step's time goes: kernels launched, GPU busy time, wall time (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    ids = torch.randint(0, model.config.vocab_size, (1, context), device=device)
    out = model(ids, use_cache=True, logits_to_keep=1)
    cache, token = getattr(out, CACHE_FIELD), out.logits[:, -1:].argmax(-1)
    for _ in range(3):
        out = model(token, use_cache=True, **{CACHE_FIELD: cache})
        cache, token = getattr(out, CACHE_FIELD), out.logits[:, -1:].argmax(-1)
    sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        for _ in range(steps):
            out = model(token, use_cache=True, **{CACHE_FIELD: cache})
            cache, token = getattr(out, CACHE_FIELD), out.logits[:, -1:].argmax(-1)
        sync(device)
    wall_ms = (time.perf_counter() - start) / steps * 1e3
    kernels = [e for e in prof.events() if e.device_type.name == "CUDA"]
    gpu_ms = sum(e.device_time for e in kernels) / 1e3 / steps
    top = prof.key_averages().table(sort_by="cuda_time_total" if kernels else "cpu_time_total", row_limit=12)
    return dict(wall_ms_per_token=wall_ms, gpu_busy_ms_per_token=gpu_ms, kernels_per_token=len(kernels) / steps,
                table=top)


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for name in sorted({r["model"] for r in results}):
        rows = [r for r in results if r["model"] == name]
        xs = [r["context"] for r in rows]
        ax1.plot(xs, [r["ms_per_token"] for r in rows], marker="o", label=name)
        ax2.plot(xs, [r["cache_MiB"] for r in rows], marker="o", label=name)
    for ax, label in ((ax1, "decode latency per token (ms)"), (ax2, "cache / state size (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend()
    ax2.set_yscale("log")
    fig.suptitle(f"batch-1 decode on {results[0]['device']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--small", action="store_true", help="small models (CPU)")
    parser.add_argument("--contexts", default=None, help="comma-separated context lengths")
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--dtype", default=None, help="bfloat16 (GPU default) or float32 (CPU default)")
    parser.add_argument("--prefill-chunk", type=int, default=4096)
    parser.add_argument("--out", default="bench_generate.json")
    parser.add_argument("--profile-context", type=int, default=2048, help="also profile decode at this context (0: off)")
    args = parser.parse_args()

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    default_contexts = "128,512,2048" if device.type == "cpu" else "128,512,2048,8192,32768"
    contexts = [int(c) for c in (args.contexts or default_contexts).split(",")]
    torch.manual_seed(0)
    small = args.small or device.type == "cpu"
    models = build_models(small, vocab_size=4096 if small else 50304)
    results, profiles = [], {}
    header = f"{'model':<10} {'params':>8} {'context':>8} {'ms/token':>9} {'cache MiB':>10} {'peak MiB':>9}"
    print(header)
    print("-" * len(header))
    for name, model in models.items():
        model = model.to(device=device, dtype=dtype).eval()
        params = sum(p.numel() for p in model.parameters())
        for context in contexts:
            latency, state, peak = measure(model, context, args.steps, device, args.prefill_chunk)
            row = dict(model=name, params=params, context=context, ms_per_token=latency,
                       cache_MiB=state / 2**20, peak_MiB=None if peak is None else peak / 2**20,
                       device=torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                       dtype=str(dtype).replace("torch.", ""))
            results.append(row)
            peak_text = "-" if peak is None else f"{peak / 2**20:9.1f}"
            print(f"{name:<10} {params / 1e6:7.1f}M {context:>8} {latency:9.3f} {state / 2**20:10.3f} {peak_text:>9}",
                  flush=True)
        if args.profile_context:
            prof = profile_decode(model, args.profile_context, 10, device)
            profiles[name] = {k: v for k, v in prof.items() if k != "table"}
            print(f"  profile @ {args.profile_context}: {prof['wall_ms_per_token']:.3f} ms wall/token, "
                  f"{prof['gpu_busy_ms_per_token']:.3f} ms GPU busy/token, {prof['kernels_per_token']:.0f} kernels/token")
            print(prof["table"])
        model.cpu()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    with open(args.out, "w") as f:
        json.dump({"results": results, "decode_profile": profiles}, f, indent=1)
    png = args.out.rsplit(".", 1)[0] + ".png"
    plot(results, png)
    print(f"wrote {args.out} and {png}")


if __name__ == "__main__":
    main()
