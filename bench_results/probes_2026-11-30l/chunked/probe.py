"""m = 2's time-last kernels in threads, one program per row (CHUNK_BELOW = 0) against rows cut into chunks with a
look-back between them (CHUNKED) as CHUNK_BELOW = 16, 32, 64 (programs per SM to fill) and 10**9 (a chunk per tile)
choose them, forward and forward+backward through hlru_scan_time_last, % of copy under
bench_scan.py's byte model (5 elements per step forward, 14 forward+backward), GPU time of CUDA-graph replays; the
largest difference between the two paths' outputs and gradients; then a captured training step of H-LRU m = 2
(time-last, d = 768, B8 T2048) without chunks and as 64 chooses them. Captures that fail (timed eagerly instead)
are printed. Usage: python3 probe.py OUT_DIR"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "scripts"))
import bench_scan  # noqa: E402

import hf_lrnn.scan_time_last as lib  # noqa: E402
from hf_lrnn import hlru_scan_time_last  # noqa: E402

out = sys.argv[1]
copy_tbps = bench_scan.copy_bandwidth()
lines, rows = [f"copy {copy_tbps:.2f} TB/s; m = 2 time-last, % of copy fwd / f+b: one program per row -> per tile"], []
for B, T, D, extras in ((1, 16384, 1024, False), (1, 65536, 1024, False), (2, 16384, 1024, False),
                        (4, 8192, 1024, False), (1, 16384, 1024, True), (8, 4096, 1024, False)):
    N = D // 2
    # inputs drawn on the CPU: a failed capture leaves the CUDA generator unusable
    g = torch.randn(B, N, 3, T).to("cuda", torch.bfloat16).requires_grad_()
    v = torch.randn(B, N, T).to("cuda", torch.bfloat16).requires_grad_()
    bias = torch.randn(N, 3).cuda().requires_grad_() if extras else None
    starts = (torch.rand(B, T) < 0.001).cuda() if extras else None
    kw = dict(gate_bias=bias, output_window=True, document_starts=starts) if extras else {}
    do = torch.randn(B, N, 2 if extras else 1, T).to("cuda", torch.bfloat16).squeeze(2)
    row, results = dict(B=B, T=T, D=D, bias_window_starts=extras), {}
    for name, chunk_below in (("rows", 0), ("fill16", 16), ("fill32", 32), ("fill64", 64), ("tiles", 10**9)):
        lib.CHUNK_BELOW = chunk_below
        row[f"{name}_num_chunks"] = lib._grid(B, N, T, "cuda", order=2)[1]["num_chunks"]
        fwd = bench_scan.bench(lambda: hlru_scan_time_last(g, v, backend="triton", **kw))

        def fb():
            hlru_scan_time_last(g, v, backend="triton", **kw)[0].backward(do)

        fbt = bench_scan.bench(fb, grad_to_none=[t for t in (g, v, bias) if t is not None])
        row[f"{name}_fwd_pct"] = 100 * B * T * N * 5 * 2 / (fwd * 1e-3) / 1e12 / copy_tbps
        row[f"{name}_fwdbwd_pct"] = 100 * B * T * N * 14 * 2 / (fbt * 1e-3) / 1e12 / copy_tbps
        row[f"{name}_fwd_ms"], row[f"{name}_fwdbwd_ms"] = fwd, fbt
        for t in (g, v, bias):
            if t is not None:
                t.grad = None
        y = hlru_scan_time_last(g, v, backend="triton", **kw)[0]
        y.backward(do)
        results[name] = [y.float()] + [t.grad.float() for t in (g, v, bias) if t is not None]
    row["max_abs_diff"] = max((a - b).abs().max().item() for name in results if name != "rows"
                              for a, b in zip(results["rows"], results[name]))
    rows.append(row)
    line = (f"B{B} T{T} D{D}{' bias+window+starts' if extras else ''}: " + ", ".join(
        f"{name} ({row[name + '_num_chunks']} chunks) {row[name + '_fwd_pct']:.1f} / {row[name + '_fwdbwd_pct']:.1f}"
        for name in results) + f"; max |diff| {row['max_abs_diff']:.2g}")
    lines.append(line)
    print(line, flush=True)
    if bench_scan.TIMING_FALLBACKS:
        lines.append(f"  timed eagerly (capture failed): {bench_scan.TIMING_FALLBACKS}")
        print(lines[-1], flush=True)
        bench_scan.TIMING_FALLBACKS.clear()
models = {}
for name, chunk_below in (("rows", 0), ("fill64", 64)):
    lib.CHUNK_BELOW = chunk_below
    r = bench_scan.run_model_rows(models=["hlru2"], cuda_graph=True)
    models[name] = r
    ours = next(x for x in r if x["model"] == "hlru m=2")
    line = (f"captured step, H-LRU m = 2 time-last, {name}: {ours['step_ms']:.1f} ms (windows "
            f"{min(ours['step_ms_windows']):.1f}-{max(ours['step_ms_windows']):.1f}), {ours['vs_llama']:.2f}x Llama")
    lines.append(line)
    print(line, flush=True)
open(f"{out}/chunked.txt", "w").write("\n".join(lines) + "\n")
json.dump(dict(copy_tbps=copy_tbps, rows=rows, models=models), open(f"{out}/chunked.json", "w"), indent=1,
          default=str)
