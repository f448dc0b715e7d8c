"""Benchmark the fused Triton H-LRU / BD-LRU scans on a CUDA GPU (written for the H200).

    PYTHONPATH=. python scripts/bench_scan.py [--quick] [--out bench_scan.json]

Prints a table and writes JSON. All inputs bfloat16, gate activation softmax, no initial state.

Minimal-bytes model (elements of 2 bytes, per "channel" per token; a channel is one H-LRU channel (N = D/m of
them, each with m+1 logits) or one BD-LRU block row (D = N*m of them, each with m+1 logits)):
    forward:          (m+1) logits + 1 value + 1 output                                   = m+3
    backward:         read (m+1) logits + value + saved output + grad_out,
                      write (m+1) grad logits + grad value                                = 2m+5
    forward+backward: (m+3) + (2m+5)                                                      = 3m+8
Effective TB/s = model bytes / median time; "% copy" compares it with a device-to-device copy measured in the
same run (bytes read + bytes written over the copy time).
Times (--timing graph, the default): the kernels' GPU time, triton.testing.do_bench_cudagraph (the calls captured in
one CUDA graph of ~20 ms and replayed: no host time; the median of 10 replays) after explicit warm-up calls, for our scans and
the peers alike. The host's share is not the kernels': on the H200's host one `backward()` costs ~0.3 ms of
autograd-engine time whatever the op (bench_results/probes_2026-11-30j/host_overhead.txt), more than the kernels of a
B8 T4096 forward+backward, so eager times of small shapes measure the host. --timing eager: triton.testing.do_bench
median (warm-up 10 ms, 50 ms of repeats, L2 flushed before each call), as the tables before 2026-11-30 were timed.
A row whose capture fails falls back to eager timing and says so (`timing_fallbacks` in the JSON).
Torch reference (hf_lrnn.scan_torch, a Python loop over time): timed once (one fwd+bwd after a warm-up) at
T_ref = 256 on the same B and D and scaled linearly to T (the loop is linear in T); its peak memory is measured
at T_ref and also scaled linearly (reported as an estimate, "ref_mem_MB_est").
Peak memory: torch.cuda.max_memory_allocated during one fwd+bwd, minus the memory held before (inputs + grad_out).
Time-last rows (H-LRU m = 1, 2 and 4; BD-LRU m = 2 and 4): hf_lrnn.ops.hlru_scan_time_last, the same recurrence on
[B, N, m+1, T] / [B, N, T] tensors, and hf_lrnn.ops.bdlru_scan_time_last on [B, N, m, m+1, T] / [B, N, m, T], under
the same byte model; at m = 1 with its speed-ups over fla and accelerated-scan of the run.
fla baseline (m = 1 only): fla.ops.hgrn.chunk_hgrn / fused_recurrent_hgrn on x = g_in * v and g = log a with
(a, g_in) the softmax-normalised gates (precomputed, bf16): the same recurrence.
Model rows (`run_model_rows`; --no-model skips them): a whole training step of H-LRU m in {1, 2, 4} and BD-LRU m in
{2, 4, 8} against transformers' Llama of the same shape, tokens/s and the ratio.
Layer row: one H-LRU mixer layer (hf_lrnn.HLRUModel(...).layers[0].mixer) at B=8, T=2048, d=1024, N*m=1024,
forward+backward under bf16 autocast, next to the paper's numbers.
"""

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import triton  # noqa: E402
from triton.testing import do_bench, do_bench_cudagraph  # noqa: E402

try:
    import hf_lrnn  # noqa: E402,F401
except Exception as _err:  # noqa: BLE001  (the model code may not import here: load the kernels alone)
    import types

    print(f"note: import hf_lrnn failed ({type(_err).__name__}: {_err}); loading the scan modules alone")
    _pkg = types.ModuleType("hf_lrnn")
    _pkg.__path__ = [os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "hf_lrnn")]
    sys.modules["hf_lrnn"] = _pkg

from hf_lrnn.ops import bdlru_scan_time_last, hlru_scan_time_last  # noqa: E402
from hf_lrnn.scan_torch import bdlru_scan_torch, hlru_scan_torch  # noqa: E402
from hf_lrnn.scan_triton import bdlru_scan_triton, hlru_scan_triton  # noqa: E402

PAPER_LAYER_MS = {1: "15.9", 2: "77-81", 4: "46-47"}


TIMING = "graph"  # --timing: "graph" (GPU time of CUDA-graph replays) or "eager" (do_bench, host time included)
TIMING_FALLBACKS = []  # the calls whose capture failed, timed eagerly instead


def bench(fn, grad_to_none=None):
    fn()
    fn()
    torch.cuda.synchronize()
    if TIMING == "graph":
        try:
            return do_bench_cudagraph(fn, rep=20, grad_to_none=grad_to_none, quantiles=[0.5, 0.2, 0.8])[0]
        except Exception as err:  # noqa: BLE001  (a peer that cannot be captured: time it eagerly, and say so)
            TIMING_FALLBACKS.append(f"{getattr(fn, '__qualname__', fn)}: {type(err).__name__}: {str(err)[:200]}")
            torch.cuda.synchronize()
    return do_bench(fn, warmup=10, rep=50, grad_to_none=grad_to_none, quantiles=[0.5, 0.2, 0.8])[0]


def peak_extra_mb(fn):
    """Peak memory of one call of fn beyond what was allocated before it, MB."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def copy_bandwidth():
    x = torch.empty(512 * 1024 * 1024, dtype=torch.uint8, device="cuda").random_()
    y = torch.empty_like(x)
    # eager even under --timing graph: captured, the copy becomes a graph memcpy node, which ran at 2.76 TB/s on the
    # H200 against 4.15 eagerly (2026-11-30), and would understate the bandwidth that the kernels are measured against
    torch.cuda.synchronize()
    ms = do_bench(lambda: y.copy_(x), warmup=10, rep=50, quantiles=[0.5, 0.2, 0.8])[0]
    return 2 * x.numel() / (ms * 1e-3) / 1e12


def make_inputs(op, B, T, D, m, requires_grad):
    N = D // m
    if op == "hlru":
        g = torch.randn(B, T, N, m + 1, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(B, T, N, device="cuda", dtype=torch.bfloat16)
        channels = N
    else:
        g = torch.randn(B, T, N, m, m + 1, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(B, T, N, m, device="cuda", dtype=torch.bfloat16)
        channels = D
    g.requires_grad_(requires_grad)
    v.requires_grad_(requires_grad)
    return g, v, channels


def run_ref(op, B, T, D, m, t_ref=256):
    ref = hlru_scan_torch if op == "hlru" else bdlru_scan_torch
    g, v, _ = make_inputs(op, B, t_ref, D, m, True)
    do = torch.randn_like(v)

    def step():
        out, _ = ref(g, v, None, "softmax")
        out.backward(do)

    step()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    step()
    torch.cuda.synchronize()
    ms = (time.perf_counter() - t0) * 1e3
    mem = (torch.cuda.max_memory_allocated() - base) / 2**20
    scale = T / t_ref
    return ms * scale, mem * scale


def run_fla(B, T, D, m_unused, ours_fwd, ours_fb):
    try:
        from fla.ops.hgrn import chunk_hgrn, fused_recurrent_hgrn
    except Exception as err:  # noqa: BLE001
        return {"fla_note": f"fla not importable: {type(err).__name__}: {err}"}
    res = {}
    z = torch.randn(B, T, D, 2, device="cuda")
    c = torch.softmax(z, -1)
    g = torch.log(c[..., 0]).to(torch.bfloat16).requires_grad_()
    x = (c[..., 1] * torch.randn(B, T, D, device="cuda")).to(torch.bfloat16).requires_grad_()
    do = torch.randn_like(x)
    for name, f in (("chunk_hgrn", chunk_hgrn), ("fused_recurrent_hgrn", fused_recurrent_hgrn)):
        try:
            fwd = bench(lambda: f(x, g))

            def fb():
                o = f(x, g)[0]
                o.backward(do)

            fbt = bench(fb, grad_to_none=[x, g])
            res[f"{name}_fwd_ms"] = fwd
            res[f"{name}_fwdbwd_ms"] = fbt
            res[f"speedup_vs_{name}_fwd"] = fwd / ours_fwd
            res[f"speedup_vs_{name}_fwdbwd"] = fbt / ours_fb
        except Exception as err:  # noqa: BLE001
            res[f"{name}_note"] = f"{type(err).__name__}: {err}"
    return res


def run_accelerated_scan(B, T, D, ours_fwd, ours_fb, warp=True):
    """accelerated-scan 0.3.1 (m = 1 peer): its Triton `scalar` scan and, where nvcc can build it, its CUDA `warp`
    scan, on the same recurrence in its own time-last layout [B, D, T]: gates a and tokens g * v from the
    softmax-normalised gate pair (precomputed, bf16). It does less than ours: no normalisation, no initial state."""
    import importlib

    res = {}
    z = torch.randn(B, D, T, 2, device="cuda")
    c = torch.softmax(z, -1)
    gates = c[..., 0].to(torch.bfloat16).contiguous().requires_grad_()
    tokens = (c[..., 1] * torch.randn(B, D, T, device="cuda")).to(torch.bfloat16).contiguous().requires_grad_()
    do = torch.randn_like(tokens)
    for name, module in (("accelerated_scan", "accelerated_scan.scalar"), ("accelerated_scan_warp", "accelerated_scan.warp")):
        if name.endswith("warp") and not warp:
            continue
        try:
            scan = importlib.import_module(module).scan
            with torch.no_grad():
                fwd = bench(lambda: scan(gates, tokens))

            def fb():
                scan(gates, tokens).backward(do)

            fbt = bench(fb, grad_to_none=[gates, tokens])
            res.update({f"{name}_fwd_ms": fwd, f"{name}_fwdbwd_ms": fbt, f"speedup_vs_{name}_fwd": fwd / ours_fwd,
                        f"speedup_vs_{name}_fwdbwd": fbt / ours_fb})
        except Exception as err:  # noqa: BLE001
            res[f"{name}_note"] = f"{type(err).__name__}: {str(err)[:200]}"
    return res


def run_time_last(op, B, T, D, m, fwd_bytes, fb_bytes, copy_tbps):
    """hlru_scan_time_last (m = 1, 2 or 4: gates [B, N, m+1, T], values [B, N, T]) or bdlru_scan_time_last (m = 2 or
    4: gates [B, N, m, m+1, T], values [B, N, m, T]), bf16: its own columns, under the same byte model as the
    [B, T, N] op's row."""
    N = D // m
    if op == "hlru":
        scan, g = hlru_scan_time_last, torch.randn(B, N, m + 1, T, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(B, N, T, device="cuda", dtype=torch.bfloat16)
    else:
        scan, g = bdlru_scan_time_last, torch.randn(B, N, m, m + 1, T, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(B, N, m, T, device="cuda", dtype=torch.bfloat16)
    g.requires_grad_()
    v.requires_grad_()
    do = torch.randn_like(v)
    with torch.no_grad():
        fwd = bench(lambda: scan(g, v, backend="triton"))

    def fb():
        scan(g, v, backend="triton")[0].backward(do)

    fbt = bench(fb, grad_to_none=[g, v])
    mem = peak_extra_mb(fb)
    return dict(time_last_fwd_ms=fwd, time_last_fwdbwd_ms=fbt, time_last_mem_MB=mem,
                time_last_fwd_pct_copy=100 * fwd_bytes / (fwd * 1e-3) / 1e12 / copy_tbps,
                time_last_fwdbwd_pct_copy=100 * fb_bytes / (fbt * 1e-3) / 1e12 / copy_tbps)


def run_case(op, B, T, D, m, copy_tbps, with_ref=True, warp=True):
    fn = hlru_scan_triton if op == "hlru" else bdlru_scan_triton
    g, v, channels = make_inputs(op, B, T, D, m, True)
    do = torch.randn_like(v)
    with torch.no_grad():
        fwd = bench(lambda: fn(g, v, None, "softmax", False, None))
        fwd_seq = bench(lambda: fn(g, v, None, "softmax", False, None, 0))

    def fb():
        out, _ = fn(g, v, None, "softmax", False, None)
        out.backward(do)

    fbt = bench(fb, grad_to_none=[g, v])
    mem = peak_extra_mb(fb)
    g.grad = v.grad = None
    logits_mb = g.numel() * g.element_size() / 2**20
    tok = B * T * channels
    fwd_bytes = tok * (m + 3) * 2
    fb_bytes = tok * (3 * m + 8) * 2
    row = dict(op=op, B=B, T=T, D=D, m=m, fwd_ms=fwd, fwd_seq_ms=fwd_seq, fwdbwd_ms=fbt,
               fwd_TBps=fwd_bytes / (fwd * 1e-3) / 1e12, fwdbwd_TBps=fb_bytes / (fbt * 1e-3) / 1e12,
               mem_MB=mem, logits_MB=logits_mb)
    row["fwd_pct_copy"] = 100 * row["fwd_TBps"] / copy_tbps
    row["fwdbwd_pct_copy"] = 100 * row["fwdbwd_TBps"] / copy_tbps
    del g, v, do
    if with_ref:
        ref_ms, ref_mem = run_ref(op, B, T, D, m)
        row.update(ref_fwdbwd_ms_est=ref_ms, speedup_vs_ref_fwdbwd=ref_ms / fbt, ref_mem_MB_est=ref_mem)
    if m == 1 and op == "hlru":
        row.update(run_fla(B, T, D, m, fwd, fbt))
        row.update(run_accelerated_scan(B, T, D, fwd, fbt, warp))
    if (op == "hlru" and m in (1, 2, 4)) or (op == "bdlru" and m in (2, 4)):
        row.update(run_time_last(op, B, T, D, m, fwd_bytes, fb_bytes, copy_tbps))
        for peer in ("chunk_hgrn", "accelerated_scan"):  # the time-last scan against the same peers (m = 1)
            if f"{peer}_fwd_ms" in row:
                row[f"time_last_speedup_vs_{peer}_fwd"] = row[f"{peer}_fwd_ms"] / row["time_last_fwd_ms"]
                row[f"time_last_speedup_vs_{peer}_fwdbwd"] = row[f"{peer}_fwdbwd_ms"] / row["time_last_fwdbwd_ms"]
    torch.cuda.empty_cache()
    return row


def run_layer(m):
    try:
        from hf_lrnn import HLRUConfig, HLRUModel
    except Exception as err:  # noqa: BLE001
        return dict(m=m, note=f"mixer import failed: {type(err).__name__}: {err}")
    try:
        cfg = HLRUConfig(vocab_size=256, hidden_size=1024, num_hidden_layers=1, num_channels=1024 // m, order=m)
        mixer = HLRUModel(cfg).layers[0].mixer.cuda()
        x = torch.randn(8, 2048, 1024, device="cuda", requires_grad=True)
        dy = torch.randn(8, 2048, 1024, device="cuda")

        def fb():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                y = mixer(x)
            y = y[0] if isinstance(y, tuple) else y
            y.backward(dy)

        ms = bench(fb, grad_to_none=[x] + list(mixer.parameters()))
        paper = PAPER_LAYER_MS[m]
        lo = float(paper.split("-")[0])
        return dict(m=m, layer_fwdbwd_ms=ms, paper_ms=paper, speedup_vs_paper=lo / ms)
    except Exception as err:  # noqa: BLE001
        return dict(m=m, note=f"mixer run failed: {type(err).__name__}: {err}")


def run_model_rows(device="cuda", small=False, steps=10, compile_models=False, models=None, compile_mode=None,
                   loss_backend=None, windows=3, cuda_graph=False):
    """Training tokens/s of whole models (d = 768, 12 blocks, SwiGLU 2048, vocabulary 50304; B8 T2048; bf16 autocast;
    forward, backward and a fused AdamW step on CUDA, the Trainer's default): H-LRU m in {1, 2, 4} and BD-LRU m in {2,
    4, 8} (H-LRU m = 1, 2 and 4 and BD-LRU m = 2 and 4 with config.scan_layout's default, "time_last"), and H-LRU
    m = 1, 2 and 4 and BD-LRU m = 2 and 4 with "time_first" (the [B, T, N] scans), against transformers' Llama of the
    same shape (sdpa attention, 12 heads). compile_models: every model, Llama too, through torch.compile (inductor;
    the first steps, which compile, are not timed), with torch.compile's `compile_mode` ("reduce-overhead": the
    forward and backward replay as CUDA graphs, so no step pays the host's launch costs). models: only these rows
    ("hlru2", "bdlru4", ...; Llama always runs, the ratios need it). Each row
    times `windows` windows of `steps` steps and reports the median window (`step_ms`) and all of them
    (`step_ms_windows`): a row moved by up to 15 % between runs minutes apart (H-LRU m = 2: 45.4-52.3 ms), and the
    spread inside a run shows whether it is steady. On CUDA each row also records the GPU's kernel time per step
    (`gpu_kernel_ms`, 3 profiled steps after the windows).
    loss_backend: our models' `config.loss_backend` (None: the one-kernel loss of hf_lrnn/lm_loss.py on CUDA; "torch":
    transformers' loss, as Llama's always is). Each row records the loss that ran (`loss_backend`: "torch" or "triton",
    "torch" under torch.compile, where the kernel steps aside for inductor; None for Llama).
    cuda_graph: every model, Llama too, eager but with its whole training step (forward, backward, the fused AdamW
    step, made `capturable`) captured once in a CUDA graph after the warm-up steps and replayed: no step pays the
    host's launch costs, so the rows compare the GPU work of eager kernels where the host cannot keep up (as
    PyTorch's whole-network capture does; autocast without its cast cache, which capture does not allow)."""
    from hf_lrnn.lm_loss import resolve_loss_backend
    from transformers import AutoModelForCausalLM, LlamaConfig

    from hf_lrnn import BDLRUConfig, HLRUConfig

    if cuda_graph and (compile_models or not device.startswith("cuda")):
        raise ValueError(f"--model-cuda-graph captures eager steps on CUDA: it cannot be combined with --model-compile "
                         f"(compile_models={compile_models}) and needs a CUDA device, got {device!r}")
    if compile_mode is not None and not compile_models:
        raise ValueError(f"--model-compile-mode {compile_mode!r} is torch.compile's mode: it needs --model-compile "
                         "(compile_models=True), which was not given")
    d, layers, mlp, vocab, B, T = (64, 2, 128, 256, 2, 64) if small else (768, 12, 2048, 50304, 8, 2048)
    common = dict(vocab_size=vocab, hidden_size=d, num_hidden_layers=layers, intermediate_size=mlp)
    ours = dict(common, loss_backend=loss_backend)
    configs = {f"hlru m={m}": HLRUConfig(order=m, **ours) for m in (1, 2, 4)}
    # H-LRU m = 1, 2 and 4 with the [B, T, N] scans (config.scan_layout; the default, "time_last", is the rows above)
    configs.update({f"hlru m={m} time-first": HLRUConfig(order=m, scan_layout="time_first", **ours)
                    for m in (1, 2, 4)})
    configs.update({f"bdlru m={m}": BDLRUConfig(block_size=m, **ours) for m in (2, 4, 8)})
    configs.update({f"bdlru m={m} time-first": BDLRUConfig(block_size=m, scan_layout="time_first", **ours)
                    for m in (2, 4)})
    configs["llama"] = LlamaConfig(num_attention_heads=4 if small else 12, attn_implementation="sdpa",
                                   tie_word_embeddings=True, **common)
    if models:
        def short(name):  # "hlru m=1 time-first" -> "hlru1-time-first"
            return name.replace(" m=", "").replace(" ", "-")

        unknown = set(models) - {short(name) for name in configs}
        if unknown:
            raise ValueError(f"--models: unknown rows {sorted(unknown)}; expected some of "
                             f"{', '.join(short(name) for name in configs)}")
        configs = {name: c for name, c in configs.items() if name == "llama" or short(name) in models}
    on_cuda = device.startswith("cuda")
    rows = []
    for name, config in configs.items():
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config).to(device)
        # fused on CUDA, the Trainer's default (adamw_torch_fused), for every row
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=on_cuda, capturable=cuda_graph)
        forward = torch.compile(model, mode=compile_mode) if compile_models else model
        ids = torch.randint(0, vocab, (B, T), device=device)

        def step():
            if compile_mode == "reduce-overhead":
                torch.compiler.cudagraph_mark_step_begin()  # a new training step: the graphs' outputs may be reused
            # first, not last: a captured step then records a backward that writes the gradients (in the graph's
            # memory) instead of adding to them
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, cache_enabled=not cuda_graph):
                loss = forward(ids, labels=ids, use_cache=False).loss
            loss.backward()
            optimizer.step()

        if cuda_graph:
            try:
                step = _captured(step, device)
            except RuntimeError as err:  # e.g. a host sync inside the step: report the row, run the others
                rows.append(dict(model=name, compiled=False, compile_mode=None, cuda_graph=True,
                                 parameters=sum(p.numel() for p in model.parameters()), d=d, layers=layers, B=B, T=T,
                                 error=f"capture failed: {str(err).splitlines()[0][:300]}"))
                del model, optimizer, forward
                torch.cuda.empty_cache()
                continue
        else:
            for _ in range(3):
                step()
        window_ms = []
        for _ in range(windows):
            if on_cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(steps):
                step()
            if on_cuda:
                torch.cuda.synchronize()
            window_ms.append((time.perf_counter() - start) / steps * 1e3)
        seconds = statistics.median(window_ms) / 1e3
        gpu_kernel_ms = gpu_kernel_ms_per_step(step, 3) if on_cuda else None
        rows.append(dict(model=name, compiled=compile_models, compile_mode=compile_mode if compile_models else None,
                         cuda_graph=cuda_graph, scan_layout=getattr(config, "scan_layout", None),
                         loss_backend=(None if not hasattr(config, "loss_backend") else "torch" if compile_models
                                       else resolve_loss_backend(config.loss_backend, device)),
                         optimizer="AdamW fused" if on_cuda else "AdamW",
                         parameters=sum(p.numel() for p in model.parameters()),
                         d=d, layers=layers, B=B, T=T, step_ms=seconds * 1e3, step_ms_windows=window_ms,
                         gpu_kernel_ms=gpu_kernel_ms, tokens_per_s=B * T / seconds))
        del model, optimizer, forward
        if on_cuda:
            torch.cuda.empty_cache()
    llama = next(r for r in rows if r["model"] == "llama").get("tokens_per_s")
    for r in rows:
        r["vs_llama"] = r["tokens_per_s"] / llama if llama and r.get("tokens_per_s") else None
    return rows


def _captured(step, device):
    """`step` (a whole training step that sets the gradients to None first) captured in a CUDA graph the way
    generate()'s decode steps are (hf_lrnn's `CudaGraph`: 2 warm-up runs on a side stream, which compile the Triton
    kernels and create the optimizer's state, then the capture, which records the step without running it); returns
    the graph's replay."""
    from hf_lrnn.decoding_lrnn import CudaGraph

    graph = CudaGraph(torch.device(device))
    graph.capture(step)
    return graph.replay


def gpu_kernel_ms_per_step(step, steps):
    """The GPU's kernel time per call of `step` (torch.profiler, CUDA activity, summed over kernels). Next to the wall
    time it says what bounds a step: kernels close to the wall, the GPU; far below it, the host or its syncs."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    return sum(event.self_device_time_total for event in prof.key_averages()) / steps / 1e3


def model_lines(models):
    if not models:
        return []
    compiled = ", torch.compile" if models[0]["compiled"] else ", eager"
    if models[0].get("cuda_graph"):
        compiled += ", each step one captured CUDA graph"
    if models[0].get("compile_mode"):
        compiled += f" mode={models[0]['compile_mode']}"
    if models[0].get("loss_backend"):
        compiled += f"; our models' loss: {models[0]['loss_backend']}, Llama's: transformers'"
    first = next((r for r in models if not r.get("error")), models[0])
    lines = [f"Training step of whole models (B={first['B']} T={first['T']}, d={first['d']}, {first['layers']} blocks, bf16 "
             f"autocast, {first.get('optimizer', 'AdamW')}{compiled}), tokens/s and against Llama (sdpa), the median of "
             f"{len(first.get('step_ms_windows') or [0])} timed windows:"]
    for r in models:
        if r.get("error"):
            lines.append(f"  {r['model']:<18} {r['parameters'] / 1e6:6.1f}M  {r['error']}")
            continue
        spread = r.get("step_ms_windows") or [r["step_ms"]]
        kernels = f", GPU kernels {r['gpu_kernel_ms']:.1f} ms" if r.get("gpu_kernel_ms") is not None else ""
        lines.append(f"  {r['model']:<18} {r['parameters'] / 1e6:6.1f}M  {r['step_ms']:8.1f} ms  "
                     f"{r['tokens_per_s'] / 1e3:7.1f}K tokens/s  "
                     f"{'%.2fx' % r['vs_llama'] if r['vs_llama'] is not None else 'n/a  '}   "
                     f"(windows {min(spread):.1f}-{max(spread):.1f} ms{kernels})")
    return lines


def print_model_rows(models, out_path):
    dev = torch.cuda.get_device_name()
    table = "\n".join([f"device {dev}, torch {torch.__version__}, triton {triton.__version__}"] + model_lines(models))
    print(table)
    with open(out_path, "w") as f:
        json.dump(dict(device=dev, torch=torch.__version__, triton=triton.__version__, models=models, table=table), f,
                  indent=1)


def sweep_chunks(chunks, out_path):
    rows = []
    print(f"{'op':6} {'B':>3} {'T':>6} {'D':>5} {'m':>3} {'chunk':>6} {'fwd ms':>8} {'f+b ms':>8}")
    for B, T, D in [(8, 4096, 1024), (1, 16384, 1024), (32, 2048, 2048)]:
        for op, ms in (("hlru", (1, 2, 4)), ("bdlru", (1, 2, 4))):
            fn = hlru_scan_triton if op == "hlru" else bdlru_scan_triton
            for m in ms:
                g, v, _ = make_inputs(op, B, T, D, m, True)
                do = torch.randn_like(v)
                for chunk in [None] + chunks:
                    with torch.no_grad():
                        fwd = bench(lambda: fn(g, v, None, "softmax", False, None, chunk))

                    def fb():
                        out, _ = fn(g, v, None, "softmax", False, None, chunk)
                        out.backward(do)

                    fbt = bench(fb, grad_to_none=[g, v])
                    rows.append(dict(op=op, B=B, T=T, D=D, m=m, chunk=chunk, fwd_ms=fwd, fwdbwd_ms=fbt))
                    print(f"{op:6} {B:>3} {T:>6} {D:>5} {m:>3} {str(chunk):>6} {fwd:8.3f} {fbt:8.3f}", flush=True)
                del g, v, do
                torch.cuda.empty_cache()
    with open(out_path, "w") as f:
        json.dump(rows, f, indent=1)


def sweep_first_order(tiles, out_path):
    """Time the first-order (m = 1) look-back kernels for each tile BTxBNxWARPS, forward and forward+backward."""
    from hf_lrnn import scan_triton

    rows = []
    copy = copy_bandwidth()
    print(f"copy {copy:.2f} TB/s")
    print(f"{'B':>3} {'T':>6} {'D':>5} {'tile':>10} {'fwd ms':>8} {'%copy':>6} {'f+b ms':>8} {'%copy':>6}")
    for B, T, D in [(8, 4096, 1024), (1, 16384, 1024), (32, 2048, 2048), (64, 2048, 1024), (1, 65536, 1024)]:
        g, v, _ = make_inputs("hlru", B, T, D, 1, True)
        do = torch.randn_like(v)
        for tile in tiles:
            bt, bn, warps = (int(x) for x in tile.split("x"))
            scan_triton.FIRST_ORDER_TILE.update(BT=bt, BN=bn, num_warps=warps)
            with torch.no_grad():
                fwd = bench(lambda: hlru_scan_triton(g, v, None, "softmax", False, None))

            def fb():
                out, _ = hlru_scan_triton(g, v, None, "softmax", False, None)
                out.backward(do)

            fbt = bench(fb, grad_to_none=[g, v])
            tok = B * T * D
            row = dict(B=B, T=T, D=D, tile=tile, fwd_ms=fwd, fwdbwd_ms=fbt,
                       fwd_pct_copy=100 * tok * 4 * 2 / (fwd * 1e-3) / 1e12 / copy,
                       fwdbwd_pct_copy=100 * tok * 11 * 2 / (fbt * 1e-3) / 1e12 / copy)
            rows.append(row)
            print(f"{B:>3} {T:>6} {D:>5} {tile:>10} {fwd:8.3f} {row['fwd_pct_copy']:6.1f} {fbt:8.3f} "
                  f"{row['fwdbwd_pct_copy']:6.1f}", flush=True)
        del g, v, do
        torch.cuda.empty_cache()
    with open(out_path, "w") as f:
        json.dump(dict(copy_TBps=copy, rows=rows), f, indent=1)


def compare_first_order(out_path, repeats=3):
    """Same-run A/B at m = 1: the look-back kernels (automatic) against the previous 3-phase chunked kernels (forced
    with the chunk length their policy chose), `repeats` alternating rounds, forward and forward+backward."""
    from hf_lrnn import scan_triton

    rows = []
    for B, T, D in [(8, 4096, 1024), (1, 16384, 1024), (32, 2048, 2048), (1, 65536, 1024), (4, 2048, 768)]:
        g, v, _ = make_inputs("hlru", B, T, D, 1, True)
        do = torch.randn_like(v)
        old_chunk = scan_triton._auto_chunk(B, D, 1, False, T)
        times = {"new": ([], []), "old": ([], [])}
        for _ in range(repeats):
            for name, chunk in (("new", None), ("old", old_chunk)):
                with torch.no_grad():
                    times[name][0].append(bench(lambda: hlru_scan_triton(g, v, None, "softmax", False, None, chunk)))

                def fb():
                    out, _ = hlru_scan_triton(g, v, None, "softmax", False, None, chunk)
                    out.backward(do)

                times[name][1].append(bench(fb, grad_to_none=[g, v]))
        row = dict(B=B, T=T, D=D, old_chunk=old_chunk, **{f"{name}_{kind}_ms": t[i] for name, t in times.items()
                                                          for i, kind in enumerate(("fwd", "fwdbwd"))})
        rows.append(row)
        print(f"B{B} T{T} D{D}: " + "  ".join(
            f"{name} fwd {min(t[0]) * 1e3:.0f}-{max(t[0]) * 1e3:.0f} us, f+b {min(t[1]) * 1e3:.0f}-{max(t[1]) * 1e3:.0f} us"
            for name, t in times.items()), flush=True)
    with open(out_path, "w") as f:
        json.dump(rows, f, indent=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench_scan.json")
    ap.add_argument("--quick", action="store_true", help="one shape, fewer orders")
    ap.add_argument("--no-ref", action="store_true", help="skip the torch reference timings")
    ap.add_argument("--sweep", default="", help="comma-separated chunk sizes: only time these forced chunk sizes "
                    "(m <= 4) next to the automatic choice, to tune the chunk policy")
    ap.add_argument("--first_order_tiles", default="", help="comma-separated BTxBNxWARPS tiles: only time the "
                    "first-order (m = 1) kernels with each, to choose the tile")
    ap.add_argument("--compare_first_order", action="store_true", help="only the same-run A/B of the m = 1 kernels "
                    "(look-back against the previous chunked kernels)")
    ap.add_argument("--orders", default="", help="comma-separated m: only these orders / block sizes")
    ap.add_argument("--no-model", action="store_true", help="skip the whole-model training rows (against Llama)")
    ap.add_argument("--only-model", action="store_true", help="only the whole-model training rows (against Llama)")
    ap.add_argument("--model-compile", action="store_true", help="the model rows through torch.compile (all models)")
    ap.add_argument("--model-compile-mode", default=None, choices=["default", "reduce-overhead", "max-autotune",
                    "max-autotune-no-cudagraphs"], help="torch.compile's mode for --model-compile (default: its default)")
    ap.add_argument("--model-cuda-graph", action="store_true", help="the model rows eager, each training step one "
                    "captured CUDA graph (all models): GPU work without the host's launch costs")
    ap.add_argument("--models", default="", help="comma-separated model rows to run, e.g. hlru2,bdlru4 (Llama always "
                    "runs); default all")
    ap.add_argument("--timing", default="graph", choices=["graph", "eager"], help="graph: the kernels' GPU time "
                    "(CUDA-graph replays; default); eager: do_bench wall per call, the host's time included")
    ap.add_argument("--no-warp", action="store_true", help="skip accelerated-scan's CUDA warp scan (builds with nvcc)")
    ap.add_argument("--model-loss-backend", default=None, choices=["torch", "triton"], help="our models' "
                    "config.loss_backend in the model rows (default: the one-kernel loss on CUDA; torch: transformers' "
                    "loss, which Llama always uses)")
    args = ap.parse_args()
    global TIMING
    TIMING = args.timing
    model_names = [name for name in args.models.split(",") if name]
    if args.sweep:
        return sweep_chunks([int(c) for c in args.sweep.split(",")], args.out)
    if args.first_order_tiles:
        return sweep_first_order(args.first_order_tiles.split(","), args.out)
    if args.compare_first_order:
        return compare_first_order(args.out)
    if args.only_model:
        return print_model_rows(run_model_rows(compile_models=args.model_compile, models=model_names,
                                               compile_mode=args.model_compile_mode,
                                               loss_backend=args.model_loss_backend,
                                               cuda_graph=args.model_cuda_graph), args.out)
    shapes = [(8, 4096, 1024), (1, 16384, 1024), (32, 2048, 2048)]
    ms_h = [1, 2, 4, 8]
    ms_b = [1, 2, 4, 8, 16]
    if args.quick:
        shapes, ms_h, ms_b = [(8, 4096, 1024)], [1, 4], [4, 16]
    if args.orders:
        keep = {int(m) for m in args.orders.split(",")}
        ms_h, ms_b = [m for m in ms_h if m in keep], [m for m in ms_b if m in keep]
    dev = torch.cuda.get_device_name()
    copy = copy_bandwidth()
    print(f"device {dev}, torch {torch.__version__}, triton {triton.__version__}, copy {copy:.2f} TB/s", flush=True)
    rows = []
    for B, T, D in shapes:
        for op, ms in (("hlru", ms_h), ("bdlru", ms_b)):
            for m in ms:
                row = run_case(op, B, T, D, m, copy, with_ref=not args.no_ref, warp=not args.no_warp)
                rows.append(row)
                print(json.dumps(row), flush=True)
    layers = [run_layer(m) for m in (1, 2, 4)]
    for r in layers:
        print(json.dumps(r), flush=True)
    models = [] if args.no_model else run_model_rows(compile_models=args.model_compile, models=model_names,
                                                     compile_mode=args.model_compile_mode,
                                                     loss_backend=args.model_loss_backend,
                                                     cuda_graph=args.model_cuda_graph)

    hdr = (f"{'op':6} {'B':>3} {'T':>6} {'D':>5} {'m':>3} | {'fwd ms':>8} {'seq ms':>8} {'TB/s':>5} {'%copy':>5} | "
           f"{'f+b ms':>8} {'TB/s':>5} {'%copy':>5} | {'x ref':>7} {'mem MB':>7} {'ref MB*':>8} | "
           "speed-up over fla chunk f/fb, fused f/fb; over accelerated-scan scalar f/fb, warp f/fb")
    timing = ("GPU time of CUDA-graph replays" if TIMING == "graph" else "do_bench wall per call, host included")
    lines = [f"copy bandwidth {copy:.2f} TB/s ({dev}); kernel times: {timing}", hdr, "-" * len(hdr)]
    for r in rows:
        fla = ""
        if "speedup_vs_chunk_hgrn_fwd" in r:
            fla = (f"{r['speedup_vs_chunk_hgrn_fwd']:.1f}x/{r['speedup_vs_chunk_hgrn_fwdbwd']:.1f}x, "
                   f"{r.get('speedup_vs_fused_recurrent_hgrn_fwd', float('nan')):.1f}x/"
                   f"{r.get('speedup_vs_fused_recurrent_hgrn_fwdbwd', float('nan')):.1f}x "
                   f"(chunk {r['chunk_hgrn_fwd_ms']:.3f}/{r['chunk_hgrn_fwdbwd_ms']:.3f} ms)")
        elif "fla_note" in r:
            fla = r["fla_note"][:40]
        if "speedup_vs_accelerated_scan_fwd" in r:
            fla += (f"; acc-scan f/fb {r['speedup_vs_accelerated_scan_fwd']:.2f}x/"
                    f"{r['speedup_vs_accelerated_scan_fwdbwd']:.2f}x")
            if "speedup_vs_accelerated_scan_warp_fwd" in r:
                fla += (f", warp {r['speedup_vs_accelerated_scan_warp_fwd']:.2f}x/"
                        f"{r['speedup_vs_accelerated_scan_warp_fwdbwd']:.2f}x")
        lines.append(
            f"{r['op']:6} {r['B']:>3} {r['T']:>6} {r['D']:>5} {r['m']:>3} | {r['fwd_ms']:8.3f} {r['fwd_seq_ms']:8.3f} "
            f"{r['fwd_TBps']:5.2f} {r['fwd_pct_copy']:5.1f} | {r['fwdbwd_ms']:8.3f} {r['fwdbwd_TBps']:5.2f} "
            f"{r['fwdbwd_pct_copy']:5.1f} | {r.get('speedup_vs_ref_fwdbwd', float('nan')):7.0f} {r['mem_MB']:7.0f} "
            f"{r.get('ref_mem_MB_est', float('nan')):8.0f} | {fla}")
        if "time_last_fwd_ms" in r:
            lines.append(
                f"{'  time-last':>31} | {r['time_last_fwd_ms']:8.3f} {'':8} {'':5} {r['time_last_fwd_pct_copy']:5.1f} | "
                f"{r['time_last_fwdbwd_ms']:8.3f} {'':5} {r['time_last_fwdbwd_pct_copy']:5.1f} | {'':7} "
                f"{r['time_last_mem_MB']:7.0f} {'':8} | " + (
                    f"fla chunk f/fb {r.get('time_last_speedup_vs_chunk_hgrn_fwd', float('nan')):.1f}x/"
                    f"{r.get('time_last_speedup_vs_chunk_hgrn_fwdbwd', float('nan')):.1f}x; acc-scan f/fb "
                    f"{r.get('time_last_speedup_vs_accelerated_scan_fwd', float('nan')):.2f}x/"
                    f"{r.get('time_last_speedup_vs_accelerated_scan_fwdbwd', float('nan')):.2f}x" if r["m"] == 1 else
                    f"{r['fwd_ms'] / r['time_last_fwd_ms']:.2f}x / {r['fwdbwd_ms'] / r['time_last_fwdbwd_ms']:.2f}x "
                    "the [B, T, N] kernels' fwd / fwd+bwd"))
    lines.append("(time-last = hlru_scan_time_last on [B, N, m+1, T] / [B, N, T] tensors, bdlru_scan_time_last on "
                 "[B, N, m, m+1, T] / [B, N, m, T], the same recurrence; "
                 "fwd = auto mode; seq = forced sequential kernel; x ref = speed-up of fwd+bwd over the torch reference "
                 "timed at T=256 and scaled linearly; mem = peak extra memory of one fwd+bwd; ref MB* = reference peak "
                 "at T=256 scaled linearly)")
    lines.append("H-LRU mixer layer, B=8 T=2048 d=1024 N*m=1024, fwd+bwd, bf16 autocast:")
    for r in layers:
        if "layer_fwdbwd_ms" in r:
            lines.append(f"  m={r['m']}: {r['layer_fwdbwd_ms']:.3f} ms (paper {r['paper_ms']} ms, "
                         f"{r['speedup_vs_paper']:.0f}x faster)")
        else:
            lines.append(f"  m={r['m']}: {r['note']}")
    lines += model_lines(models)
    if TIMING_FALLBACKS:
        lines.append(f"timed eagerly (capture failed): {len(TIMING_FALLBACKS)} calls; see timing_fallbacks in the JSON")
    table = "\n".join(lines)
    print(table)
    with open(args.out, "w") as f:
        json.dump(dict(device=dev, torch=torch.__version__, triton=triton.__version__, copy_TBps=copy,
                       timing=TIMING, timing_fallbacks=TIMING_FALLBACKS, rows=rows, layers=layers, models=models,
                       table=table), f, indent=1)


if __name__ == "__main__":
    main()
