"""H-LRU m = 4 time-last: whole rows (one program per row walking every tile) against chunks of one tile joined by
the look-back (M4_CHUNKED_BELOW), and the [B, T, N] kernels (hlru_scan_triton), same run, bf16, CUDA-graph timing and
bench_scan.py's byte model. (Its second run, m4_chunk_tiles/, also timed chunks of 2-16 tiles through a library
constant, M4_CHUNK_TILES, that was dropped with them.)

    python3 bench_results/probes_2026-12-02/probe_m4_chunks.py --out OUT/m4_chunks.json
"""

import argparse
import json
import os
import sys

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import bench_scan  # noqa: E402
from hf_lrnn import scan_time_last  # noqa: E402
from hf_lrnn.ops import hlru_scan_time_last  # noqa: E402
from hf_lrnn.scan_triton import hlru_scan_triton  # noqa: E402

SHAPES = [(1, 16384, 1024), (2, 8192, 1024), (4, 4096, 1024), (8, 2048, 768), (8, 4096, 1024), (1, 65536, 1024),
          (1, 4096, 1024), (32, 2048, 2048)]
MODES = ["rows", "chunks", "[B,T,N]"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="m4_chunks.json")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    copy = bench_scan.copy_bandwidth()
    print(f"copy {copy:.2f} TB/s", flush=True)
    m, rows = 4, []
    for B, T, D in SHAPES:
        N = D // m
        g = torch.randn(B, N, m + 1, T, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        v = torch.randn(B, N, T, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        do = torch.randn_like(v)
        tok = B * T * N
        fwd_bytes, fb_bytes = tok * (m + 3) * 2, tok * (3 * m + 8) * 2
        programs = B * -(-N // scan_time_last.M4_TILE["BC"])
        g_btn = g.detach().permute(0, 3, 1, 2).contiguous().requires_grad_()  # [B, T, N, m+1]
        v_btn = v.detach().transpose(1, 2).contiguous().requires_grad_()
        do_btn = do.transpose(1, 2).contiguous()
        for repeat in range(args.repeats):
            for mode in MODES:
                if mode == "[B,T,N]":
                    def scan():
                        return hlru_scan_triton(g_btn, v_btn, None, "softmax", False, None)

                    def fb():
                        scan()[0].backward(do_btn)
                    grads = [g_btn, v_btn]
                else:
                    scan_time_last.M4_CHUNKED_BELOW = 0 if mode == "rows" else 10**9

                    def scan():
                        return hlru_scan_time_last(g, v, backend="triton")

                    def fb():
                        scan()[0].backward(do)
                    grads = [g, v]
                with torch.no_grad():
                    fwd = bench_scan.bench(scan)
                fbt = bench_scan.bench(fb, grad_to_none=grads)
                mem = bench_scan.peak_extra_mb(fb)
                row = dict(B=B, T=T, D=D, m=m, mode=mode, repeat=repeat, programs_per_sm=programs / 132,
                           fwd_ms=fwd, fwdbwd_ms=fbt, mem_MB=mem,
                           fwd_pct_copy=100 * fwd_bytes / (fwd * 1e-3) / 1e12 / copy,
                           fwdbwd_pct_copy=100 * fb_bytes / (fbt * 1e-3) / 1e12 / copy)
                rows.append(row)
                print(f"B{B:<3} T{T:<6} D{D:<5} {programs / 132:6.1f}/SM {mode:9} fwd {fwd:7.4f} ms "
                      f"{row['fwd_pct_copy']:5.1f} %  f+b {fbt:7.4f} ms {row['fwdbwd_pct_copy']:5.1f} %  "
                      f"mem {mem:7.1f} MB", flush=True)
        torch.cuda.empty_cache()
    with open(args.out, "w") as f:
        json.dump(dict(copy_TBps=copy, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
