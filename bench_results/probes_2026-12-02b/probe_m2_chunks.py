"""H-LRU m = 2 and BD-LRU block size 2 time-last on small grids: whole rows (the library's launch before chunks:
the tile scan, or BD-LRU's in-thread path from 6 programs per SM) in tiles of several sizes (steps x warps) against
rows split into chunks of one tile joined by the look-back (M2_CHUNKED), same run, bf16, CUDA-graph timing and
bench_scan.py's byte model; each mode's outputs and gradients against the first's (max |difference| over max
|value|), and any call whose capture failed (timed eagerly then).

    python3 bench_results/probes_2026-12-02b/probe_m2_chunks.py --out OUT/m2_chunks.json
"""

import argparse
import json
import os
import sys

import torch
import triton
import triton.language as tl

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import bench_scan  # noqa: E402
from hf_lrnn import scan_time_last  # noqa: E402
try:  # the chunked kernels (M2_CHUNKED) were measured at 50f11f7 and then removed
    from hf_lrnn.scan_time_last import _publish  # noqa: E402
except ImportError:
    _publish = None
from hf_lrnn.ops import bdlru_scan_time_last, hlru_scan_time_last  # noqa: E402

SHAPES = [(1, 16384, 1024), (2, 8192, 1024), (4, 4096, 1024), (1, 65536, 1024)]
# H-LRU m = 2 at 7.8, 9.7, 11.6, 11.6, 13.6 and 15.5 programs per SM (N = D / 2 channels, one program each)
THRESHOLD_SHAPES = [(2, 8192, 1024), (5, 4096, 512), (3, 4096, 1024), (4, 2048, 768), (7, 4096, 512), (4, 4096, 1024)]
# mode: (chunked, tile steps, warps); "rows" is the library's launch before chunks
MODES = {"rows": (False, 1024, 4), "chunks-1024x4": (True, 1024, 4), "chunks-512x2": (True, 512, 2)}
# diagnostics (wrong results): chunks whose carry skips the look-back (each takes the row's initial state), or that
# also publish nothing, so that their time is the per-chunk cost without the look-back's wait
DIAGNOSTIC_MODES = {"chunks-no-look-back": (True, 1024, 4), "chunks-no-publish": (True, 1024, 4)}
MORE_MODES = {"rows-1024x8": (False, 1024, 8), "rows-2048x8": (False, 2048, 8), "rows-512x4": (False, 512, 4),
              "rows-2048x4": (False, 2048, 4), "rows-1024x2": (False, 1024, 2), "rows-4096x8": (False, 4096, 8)}
# whole rows composed in threads (the forward prefetching) in tiles of several warps: the group scan crosses warps
# H-LRU m = 2's forward on small grids in segments of a row (M2_SEGMENTS runs of 256 steps, a warp each)
SEGMENT_MODES = {"segments-2": (False, 256, 2), "segments-4": (False, 256, 4), "segments-8": (False, 256, 8)}
IN_THREADS_MODES = {"in-threads-256x1": (False, 256, 1), "in-threads-512x2": (False, 512, 2),
                    "in-threads-1024x4": (False, 1024, 4), "in-threads-2048x8": (False, 2048, 8)}
CHUNK_CARRY = getattr(scan_time_last, "_chunk_carry2", None)
DEFAULT_TILE = dict(scan_time_last.TILE)
DEFAULT_IN_THREADS_TILE = dict(scan_time_last.IN_THREADS_TILE)


@triton.jit
def _carry_without_look_back(flags, aggregates, prefixes, chunk_map, chunk, num_chunks, stream, streams,
                             map_rows_per_chunk, rows, mc, c0, c1, PREFIX_EVERY: tl.constexpr, STEP: tl.constexpr,
                             BC: tl.constexpr):
    """`_chunk_carry2`'s publishing without its look-back (wrong carries: the diagnostic's)."""
    flag = flags + chunk * streams + stream
    index = chunk.to(tl.int64) * map_rows_per_chunk + rows
    _publish(flag, aggregates, index, chunk_map, 6, 1, mc)
    p, q, r, s, b1, b2 = chunk_map
    _publish(flag, prefixes, index, (p * c0 + q * c1 + b1, r * c0 + s * c1 + b2), 2, 2, mc)
    return c0, c1


@triton.jit
def _carry_unpublished(flags, aggregates, prefixes, chunk_map, chunk, num_chunks, stream, streams,
                       map_rows_per_chunk, rows, mc, c0, c1, PREFIX_EVERY: tl.constexpr, STEP: tl.constexpr,
                       BC: tl.constexpr):
    """No look-back and nothing published (wrong carries: the diagnostic's)."""
    return c0, c1


def set_mode(mode):
    chunked, steps, warps = {**MODES, **MORE_MODES, **DIAGNOSTIC_MODES, **IN_THREADS_MODES, **SEGMENT_MODES}[mode]
    scan_time_last.M2_SEGMENTS = warps if mode in SEGMENT_MODES else 1
    if mode in SEGMENT_MODES:
        scan_time_last.M2_CHUNKED = False
        scan_time_last.SMALL_GRID_BELOW, scan_time_last.BD2_SMALL_GRID_BELOW = 16, 6
        scan_time_last.TILE = dict(DEFAULT_TILE)
        scan_time_last.IN_THREADS_TILE = dict(DEFAULT_IN_THREADS_TILE)
        return
    if chunked and CHUNK_CARRY is None:
        raise SystemExit(f"mode {mode} needs the chunked kernels of 50f11f7 (git checkout 50f11f7 -- hf_lrnn)")
    scan_time_last.IN_THREADS_TILE = dict(DEFAULT_IN_THREADS_TILE)
    if mode in IN_THREADS_MODES:
        scan_time_last.M2_CHUNKED = False
        scan_time_last.SMALL_GRID_BELOW = scan_time_last.BD2_SMALL_GRID_BELOW = 0
        scan_time_last.IN_THREADS_TILE = dict(BC=1, BT=steps, num_warps=warps)
        return
    scan_time_last._chunk_carry2 = {"chunks-no-look-back": _carry_without_look_back,
                                    "chunks-no-publish": _carry_unpublished}.get(mode, CHUNK_CARRY)
    scan_time_last.M2_CHUNKED = chunked
    scan_time_last.SMALL_GRID_BELOW = 10**9 if chunked else 16
    scan_time_last.BD2_SMALL_GRID_BELOW = 10**9 if chunked else 6
    scan_time_last.TILE = dict(BC=1, BT=steps, num_warps=warps)


def _outputs_and_gradients(scan, g, v, do):
    """States and the gradients of g and v, with nothing of the autograd graph left alive afterwards (a graph kept
    alive makes the captured backwards' AccumulateGrad nodes run on its stream, which breaks the capture)."""
    out, _ = scan(g, v, backend="triton")
    return (out.detach(),) + torch.autograd.grad(out, (g, v), do)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="m2_chunks.json")
    ap.add_argument("--ops", default="hlru,bdlru")
    ap.add_argument("--more-modes", action="store_true", help="also whole rows in other tiles")
    ap.add_argument("--in-threads", action="store_true", help="also whole rows composed in threads")
    ap.add_argument("--modes", default=None, help="only these modes (comma-separated); a diagnostic mode must run "
                    "alone in its process: Triton keys a kernel's binaries by its dependencies as first compiled")
    ap.add_argument("--shapes", type=int, default=len(SHAPES), help="the first this many shapes")
    ap.add_argument("--threshold-shapes", action="store_true",
                    help="H-LRU m = 2's grids of 7.8 to 15.5 programs per SM instead of SHAPES")
    args = ap.parse_args()
    copy = bench_scan.copy_bandwidth()
    print(f"copy {copy:.2f} TB/s", flush=True)
    m, rows = 2, []
    for op in args.ops.split(","):
        for B, T, D in THRESHOLD_SHAPES if args.threshold_shapes else SHAPES[:args.shapes]:
            N = D // m
            if op == "hlru":
                scan, g = hlru_scan_time_last, torch.randn(B, N, m + 1, T, device="cuda", dtype=torch.bfloat16)
                v = torch.randn(B, N, T, device="cuda", dtype=torch.bfloat16)
                channels = N
            else:
                scan, g = bdlru_scan_time_last, torch.randn(B, N, m, m + 1, T, device="cuda", dtype=torch.bfloat16)
                v = torch.randn(B, N, m, T, device="cuda", dtype=torch.bfloat16)
                channels = D
            g.requires_grad_()
            v.requires_grad_()
            do = torch.randn_like(v)
            tok = B * T * channels
            fwd_bytes, fb_bytes = tok * (m + 3) * 2, tok * (3 * m + 8) * 2
            reference = None
            modes = args.modes.split(",") if args.modes else list(MODES) + (list(MORE_MODES) if args.more_modes else []) \
                + (list(IN_THREADS_MODES) if args.in_threads else [])
            for mode in modes:
                set_mode(mode)
                got = [x.float() for x in _outputs_and_gradients(scan, g, v, do)]
                if reference is None:
                    reference, error = got, 0.0
                else:
                    error = max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(got, reference))
                with torch.no_grad():
                    fwd = bench_scan.bench(lambda: scan(g, v, backend="triton"))

                def fb():
                    scan(g, v, backend="triton")[0].backward(do)
                fbt = bench_scan.bench(fb, grad_to_none=[g, v])
                mem = bench_scan.peak_extra_mb(fb)
                row = dict(op=op, B=B, T=T, D=D, m=m, mode=mode, programs_per_sm=B * N / 132, fwd_ms=fwd,
                           fwdbwd_ms=fbt, mem_MB=mem, max_rel_difference_to_rows=error,
                           fwd_pct_copy=100 * fwd_bytes / (fwd * 1e-3) / 1e12 / copy,
                           fwdbwd_pct_copy=100 * fb_bytes / (fbt * 1e-3) / 1e12 / copy)
                row["timing_fallbacks"] = list(bench_scan.TIMING_FALLBACKS)
                bench_scan.TIMING_FALLBACKS.clear()
                rows.append(row)
                for fallback in row["timing_fallbacks"]:
                    print("  timed eagerly:", fallback, flush=True)
                print(f"{op:5} B{B:<3} T{T:<6} D{D:<5} {B * N / 132:5.1f}/SM {mode:14} fwd {fwd:7.4f} ms "
                      f"{row['fwd_pct_copy']:5.1f} %  f+b {fbt:7.4f} ms {row['fwdbwd_pct_copy']:5.1f} %  "
                      f"mem {mem:7.1f} MB  diff {error:.1e}", flush=True)
            g = v = do = reference = got = None
            torch.cuda.empty_cache()
    with open(args.out, "w") as f:
        json.dump(dict(copy_TBps=copy, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
