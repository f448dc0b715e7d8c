"""H-LRU scans of order 1, 2 and 4 and BD-LRU of block size 2 in a time-last layout: Triton kernels, host functions
(m = 1 is also BD-LRU m = 1).

Why a second layout: the [B, T, N] kernels of scan_triton.py hold a tile's channels across lanes, so their in-tile
scan over time crosses lanes and warps, and their time parallelism costs a look-back per chunk; they reach 35-43 % of
the H200's copy bandwidth at m = 1. With time contiguous in memory ([B, N, T]), each thread holds consecutive steps
of one channel and `tl.associative_scan` runs mostly inside threads, as in accelerated-scan: these kernels run at
82-92 % of copy forward and 62-70 % forward+backward at m = 1, 53-84 % / 39-70 % at m = 2, 20-44 % / 22-42 % at
m = 4 (bench_results/bench_scan_h200.txt). A model can produce and consume this layout without copies: a batched GEMM with
the weight broadcast over the batch writes [B, rows, T], and an output projection reads [B, N, T] states as a
transposed operand.

Layout: gate logits [B, N, m+1, T] (channel n's row of lag-1 logits, then lag 2's, then its input-gate logits: what
a coefficient projection with rows ordered (n, j) writes time-last), values and states [B, N, T], initial and final
window [B, N, m] float32 (as `hlru_scan`'s). Every gate activation of `hlru_scan`; packed documents as a [B, T] mask
of their starts; an optional logit bias [N, m+1] added in registers (its gradient summed by each program); and at
m = 2 and 4 optionally the read-out window [B, N, m, T] = (s_t, ..., s_{t-m+1}) as output instead of the states
(WINDOW), which a model's output projection reads directly.

    m = 1: s_t = a_t s_{t-1} + g_t v_t, an affine scan;
           lam_t = dy_t + a_{t+1} lam_{t+1} backward, d v_t = lam_t g_t, d (a, g)_t = lam_t (s_{t-1}, v_t).
    m = 2: u_t = (s_t, s_{t-1}) = [[a1, a2], [1, 0]]_t u_{t-1} + (g_t v_t, 0), a scan of 2 x 2 companion maps;
           backward on (lam_t, mu_t = a2_{t+1} lam_{t+1}) = [[a1, 1], [a2, 0]]_{t+1} (lam, mu)_{t+1} + (dy_t, 0)
           in reverse time, whose maps need the logits of step t + 1 only.
    m = 4: u_t = (s_t, ..., s_{t-3}) = keep_t C_t u_{t-1} + (g_t v_t, 0, 0, 0), C the 4 x 4 companion matrix, keep_t
           = 0 at a document start; backward on v = (lam, mu1, mu2, mu3) = keep_{t+1} A_{t+1} v_{t+1} + (dy_t, 0, 0,
           0), A = [[a1, 1, 0, 0], [a2, 0, 1, 0], [a3, 0, 0, 1], [a4, 0, 0, 0]] with the logits of step t + 1.
    BD-LRU block size 2: h_t = A_t h_{t-1} + g_t * v_t per block, a scan of general 2 x 2 affine maps (the type m = 2
           composes), gates [B, N, 2, 3, T], values and states [B, N, 2, T]; backward lam_t = A_{t+1}^T lam_{t+1} +
           dy_t in reverse time.

One program per (row, block of BC channels) walks the whole sequence in tiles of BT steps with the state (or
adjoint) in registers, so a row needs no look-back (except order 4's chunks, below). The forwards pipeline their
tile loops (STAGES; `_grid`): the next tiles' loads are in flight while one is scanned, which grids with few
programs per SM (B1 T16384 D1024: 1024 programs, 8 per SM) need most, as they cannot hide the loads' latency by
switching programs; of the backwards only BD-LRU block size 2's gained from it and takes it (BD2_BACKWARD_STAGES).
m = 2 composes each thread's 8 consecutive steps sequentially and scans only the groups' maps across a warp (one warp
per channel, 256-step tiles), and BD-LRU block size 2 likewise on grids that are not small (IN_THREADS, `_grid`); on
small grids each row's tile is several such runs, a warp each, joined across the warps (SEGMENTS,
`_segment_carries`; BD-LRU block size 2 where that gives 2 runs or more, else its tile scan over all of a tile's
steps); m = 4 composes in threads on every grid (M4_TILE), and on grids of under M4_CHUNKED_BELOW programs per SM
runs its forward in segments of a row too (M4_SEGMENTS, `_segment_carries4`) and splits each row of its backward
into chunks of one tile joined by a decoupled look-back on the tiles' 4 x 4 maps (`_look_back4`). The backward reads
the saved states (in values' dtype) for the window before each step, as the [B, T, N] kernels do. All arithmetic is
float32; float64 inputs are computed in float32.
"""

import math
import os
from typing import Optional, Tuple

import torch

try:  # transformers' remote-code import checker skips imports inside try blocks
    import triton
    import triton.language as tl

    from .scan_triton import (_ACT_ID, _FLAG_AGGREGATE, _FLAG_PREFIX, _affine_combine, _device_guard, _exp, _normalize,
                              _normalize_bwd, _normalize_pair, _normalize_pair_bwd, _num_sms, _reciprocal, _take_chunk,
                              _tracks_gradients)
except ImportError:  # ops.py then offers the torch backend only
    triton = None

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
# (BC channels, BT steps) per program tile, and warps: the probe's best on the H200 (1024-step tiles, 4 warps, one
# channel per program); the interpreter takes small tiles so that tests cover several of each.
TILE = {"BC": 1, "BT": 1024, "num_warps": 4}
INTERPRETER_TILE = {"BC": 2, "BT": 16, "num_warps": 1}
# Programs (of one channel each) per SM under which a grid is small (`_grid`): m = 2's backward leaves one warp a
# row, which hides too little latency there (B1 T16384 D1024: 25 % of copy forward in threads with prefetch, 48 % with
# the tile scan of 4 warps a program that m = 2 had then), for segments of a row (M2_BACKWARD_WARPS_PER_SM).
SMALL_GRID_BELOW = 16
# The forwards' tile loops as `tl.range(..., num_stages=FORWARD_STAGES)` (Triton's software pipeliner: the next tiles'
# loads go out asynchronously through shared memory while this one is scanned), instead of the register prefetch of
# the next tile that m = 1 (on small grids), H-LRU m = 2 and BD-LRU block size 2 had, and of none at m = 4. H200, % of
# copy forward, register prefetch (or none) against 3 stages: H-LRU m = 1 82.4 -> 86.5 (B1 T16384 D1024), 86.0 -> 94.1
# (B8 T4096), 90.4 -> 92.5 (B32 T2048 D2048); m = 2 52.7 -> 54.2, 71.1 -> 78.6, 70.8 -> 77.6; m = 4 19.6 -> 19.7 (one
# tile a chunk there), 40.2 -> 45.7, 43.5 -> 50.5; BD-LRU block size 4 24.7 -> 35.4, 32.2 -> 55.2, 44.7 -> 63.0. 4
# stages (tried at m = 1, m = 2 and BD-LRU 2: 18 kernel-shape pairs) were ahead of 3 at five (H-LRU m = 1 B2 T8192
# 84.9 / 84.3, m = 2 B1 T65536 58.0 / 57.9 and B32 80.4 / 77.6, BD-LRU 2 B8 81.7 / 80.3 and B32 82.0 / 80.0) and behind
# at the others (bench_results/probes_2026-12-03/pipelined.txt).
FORWARD_STAGES = 3
# The pipeline's buffers a program may hold: beyond, a forward runs unpipelined (BD-LRU block size 2 with its register
# prefetch). The largest tile, BD-LRU block size 2 in 8 segments of a row (2048 steps x 8 input rows), needs 64 KiB
# of buffers in bfloat16 and failed to launch in float64 (260 KiB of the H200's 227 an SM).
PIPELINE_SHARED_BYTES = 64 * 1024
# BD-LRU block size 2 keeps the register prefetch from this many programs per SM: 3 stages took it from 60.8 to 69.2 %
# of copy at B1 T16384 D1024 (3.9 programs per SM), 50.9 -> 79.8 at B2 T8192, 73.3 -> 80.3 at B8 T4096 D1024 (31), but
# 85.8 -> 80.0 at B32 T2048 D2048 (248; same probe); the threshold lies between the last two.
BD2_REGISTER_PREFETCH_FROM = 64
# H-LRU m = 2's forward is small (segments of a row, not one warp a row) below fewer programs per SM than its
# backward. The threshold was set against the tile scan that small grids took then (the segments that replaced it
# beat it on every small grid measured); H200, % of copy forward, in threads against the tile scan: 42.3 against 48.5
# at 7.8 programs per SM (B2 T8192 D1024), 46.1 against 45.0 at 9.7 (B5 T4096 D512), 52.9 / 60.5 against 46.5 / 44.6
# at 11.6 (B3 T4096 D1024 / B4 T2048 D768), 54.9 against 47.2 at 13.6 (B7 T4096 D512), 61.8 against 48.2 at 15.5 (B4
# T4096 D1024); forward+backward both in threads were behind at 9.7 and 13.6 (37.4 / 31.8 against 40.4 / 41.2), so the
# backward keeps SMALL_GRID_BELOW (bench_results/probes_2026-12-02b/m2_threshold.txt). Since the forward is
# software-pipelined a warp a row holds up on smaller grids: 68.0 % at 7.8 programs per SM (B2 T8192 D1024) against
# 57.2 / 58.0 / 55.0 with 2 / 4 / 8 runs, but 47.7 at 3.9 (B1 T16384) against 49.8 / 54.3 / 54.4
# (bench_results/probes_2026-12-03b/segments.txt); the threshold lies between them.
M2_FORWARD_SMALL_GRID_BELOW = 6
# H-LRU m = 2's forward on small grids runs each row's tile as runs of IN_THREADS_TILE's steps, a warp each, composed in
# threads, the runs' maps then composed across the warps (`_segment_carries`): as many runs as bring the grid to
# M2_WARPS_PER_SM warps per SM, a power of two rounded down, at most M2_MOST_SEGMENTS (`_m2_segments`; 1 run: one warp
# per row). H200, % of copy forward against the tile scan's 47.8 / 48.2 / 50.8: 40.4 / 52.6 / 48.3 with 2 / 4 / 8 runs
# at 3.9 programs per SM (B1 T16384 D1024), 55.0 / 50.7 / 51.8 at 7.8 (B2 T8192), 42.2 / 56.3 / 52.4 at 3.9 (B1
# T65536): the best at 15.5 warps per SM each time (bench_results/probes_2026-12-02b/m2_segments.txt).
M2_WARPS_PER_SM = 16
M2_MOST_SEGMENTS = 8
M2_SEGMENTS = None  # tests: a fixed number of runs instead of the rule
# Its backward likewise below SMALL_GRID_BELOW (`_segment_carries`), as many runs as bring the grid to
# M2_BACKWARD_WARPS_PER_SM (2 runs or more on every small grid; the tile scan it beat is gone).
# H200, backward ms (forward+backward minus forward) with 2 / 4 / 8 runs: 0.214 / 0.091 / 0.090 at 512 rows (B1 T16384
# D1024), 0.039 / 0.032 / 0.039 at 768 (B3 T4096 D512), 0.176 / 0.171 / 0.195 at 1024 (B1 T16384 D2048): more warps
# per SM than the forward's best; forward+backward against the tile scan 39.0 -> 44.2 % of copy at B1 T16384, 39.0
# -> 46.0 at B2 T8192, 45.1 -> 48.2 at B4 T4096 D1024 (bench_results/probes_2026-12-02c/).
M2_BACKWARD_WARPS_PER_SM = 32
# BD-LRU block size 2's small grids (`_grid`, blocked): its in-thread step does twice H-LRU m = 2's work, so its
# one-warp programs hide the loads' latency on smaller grids. H200, % of copy forward / forward+backward, in threads
# against the tile scan: 29.6 / 24.0 against 40.2 / 30.1 at 3.9 programs per SM (B1 T16384 D1024), 51.2 / 41.9 against
# 39.6 / 35.4 at 7.8 (B2 T8192 D1024), 71.9 / 44.3 against 37.7 / 35.5 at 15.5 (B4 T4096 D1024); the threshold lies
# between the first two (bench_results/probes_2026-12-01/small_grid/).
BD2_SMALL_GRID_BELOW = 6
# Its small grids in segments of a row as H-LRU m = 2's where that gives 2 runs or more, else the tile scan: the
# forward at M2_WARPS_PER_SM, the backward at BD2_BACKWARD_WARPS_PER_SM (its registers keep fewer warps resident).
# H200, B1 T16384 D1024 (512 blocks): forward 40.0 % of copy in the tile scan, 43.7 / 61.0 / 57.2 with 2 / 4 / 8 runs;
# backward ms (f+b minus forward) 0.273 in the tile scan, 0.217 / 0.231 / 0.244 with 2 / 4 / 8 runs; B1 T65536
# likewise (bench_results/probes_2026-12-02c/bd2_segments.txt).
BD2_SEGMENTS = True
BD2_BACKWARD_WARPS_PER_SM = 8
# m = 2's forward and backward with the recurrence composed 8 steps at a time in each thread (`_m2_tile_maps` /
# `_m2_tile_states`, `_m2_adjoint_tile_in_threads`) on grids that are not small, in tiles of one warp per channel:
# 32 lanes x 8 steps, so that the scan over the 32 groups and the gather of each group's start stay inside the warp.
# On the H200 at B8-B64 that took the forward from 50-59 to 59-78 % of copy and the backward from 44-49 to 51-68 %;
# 512 or 1024 steps per warp ran 20-50 % slower; 2 or 4 channels per program (a warp each) were within 2.5 points
# forward and 10 points slower to 7 faster backward (bench_results/probes_2026-11-30k/sweep_in_threads.txt).
IN_THREADS_TILE = {"BC": 1, "BT": 256, "num_warps": 1}
# m = 4, always composed in threads (`_m4_tile_maps`, `_m4_tile_states`): 2 channels per program, a warp each,
# 256-step tiles. On the H200 the probe ran forward+backward at 39-42 % of copy at B8 T4096 D1024 and B32 T2048 D2048
# so, against 30-39 % with one channel and one warp (bench_results/probes_2026-11-30l/m4/); in the library 1, 2 or 4
# channels a program were within 3 points of each other and 128-step tiles half as fast
# (probes_2026-11-30l/m4_library/sweep_tiles.txt).
M4_TILE = {"BC": 2, "BT": 256, "num_warps": 2}
# BD-LRU block size 4, composed in threads on every grid (`_bd4_tile_in_threads`): one block per program, one warp of
# 32 lanes x 4 steps. On the H200 a forward probe ran at 26-42 % of copy at B8 T4096 D1024 / B32 T2048 D2048 / B8
# T2048 D768, 1.1-2.1x the [B, T, N] kernels; 8 steps a thread needed all 255 registers
# (bench_results/probes_2026-12-01/bd4/).
BD4_TILE = {"BC": 1, "BT": 128, "num_warps": 1}
# Its backward runs as two kernels: the adjoint scan in BD4_TILE (`_bd4_adjoint_kernel`), then the gradients, parallel
# in time, in tiles of BD4_GRADIENTS_TILE (`_bd4_gradients_kernel`). One kernel doing both held 255 registers (ptxas);
# two, for all that the second reads the logits again and the adjoints back, run forward+backward 1.02x / 1.22x / 1.18x
# as fast on the H200 at B8 T4096 D1024 / B1 T16384 D1024 / B32 T2048 D2048 (256-step gradient tiles in 4 warps were at
# or near the fastest of 128-512 in both probes; bench_results/probes_2026-12-01/bd4_two_kernels/). The adjoints live in
# the value gradients' buffer, which they become, so the backward takes no memory more than one kernel's; a float32
# buffer of their own was faster at B8 (0.585 against 0.729 ms) for 4 bytes more a channel-step.
BD4_GRADIENTS_TILE = {"BC": 1, "BT": 256, "num_warps": 4}
# BD-LRU block size 4 on small grids as BD-LRU block size 2's: each row's tile several runs of BD4_TILE's steps, a
# warp each, joined across the warps (`_segment_carries4`), as many as bring the grid to BD4_WARPS_PER_SM warps per SM
# (`_m2_segments`; B1 T16384 D1024: 256 blocks, 4 runs), forward and adjoint scan alike (BD4_SEGMENTS False: one
# warp a row on every grid). On the H200 in bf16, forward / forward+backward against one warp a row: B1 T16384 D1024
# 9.7 / 11.0 -> 24.8 / 25.3 % of copy (4 runs), B1 T65536 9.7 / 11.1 -> 25.1 / 25.2, B2 T8192 18.9 / 20.3 -> 26.4 /
# 27.1 (2 runs); at B4 T4096 the rule gives 1 run, where 2 would lose (32.9 -> 26.3 % forward); 4 and 8 runs at B1
# were within 3 % of each other (bench_results/probes_2026-12-02d/bd4_segments.txt).
BD4_SEGMENTS = True
BD4_WARPS_PER_SM = 8
# The in-thread backwards (m = 2's on grids that are not small, m = 4's) cap their registers (Triton's `maxnreg`,
# `_backward_register_cap`) so that the whole grid is resident at once where a cap of at least MIN_BACKWARD_REGISTERS
# allows it: at B8 T4096 D1024 m = 2 (31 one-warp programs per SM; 96 registers keep 21 resident, 64 keep 32) that
# took forward+backward from 53 to 62 % of copy on the H200, and at the model's B8 T2048 D768 with gate bias and
# window output (141-146 registers, 24 programs per SM; 80 keep 25) from 40 to 50 %, while grids of many waves gained
# nothing from a cap. m = 4's backward holds 168 registers where 128 spill nothing (`ptxas -v`), so it is capped at
# M4_BACKWARD_REGISTERS always: 31 -> 39 % at B8 T4096 D1024, 39 -> 42 % at B32 T2048 D2048, within 1 point
# elsewhere. Caps under 64 spill; the forwards gained nothing from any cap (bench_results/probes_2026-12-01/maxnreg/).
REGISTERS_PER_SM = 65536  # 64K 32-bit registers per SM on NVIDIA GPUs from Kepler to Blackwell
MIN_BACKWARD_REGISTERS = 64
M4_BACKWARD_REGISTERS = 128
# BD-LRU block size 2's backward in threads, without a gate bias, holds 140 registers a thread (144 as allocated) and
# spills nothing down to 128 (`ptxas`, Triton 3.6, sm_90; bench_results/probes_2026-12-02d/registers.py), so 14 of
# its one-warp programs are resident per SM, or 16 at 128. Where 128 runs the grid in fewer waves it is the cap
# (`_fewest_waves_register_cap`): H200, backward ms without and with it at B8 T4096 D1024 (31 programs per SM: 3
# waves -> 2) 0.316 -> 0.278, B4 (15.5: 2 -> 1) 0.200 -> 0.143, B16 0.612 -> 0.545, B32 T2048 D2048 1.133 -> 1.052;
# at the models' B8 T2048 D768 (23.3 per SM, 2 waves either way) 128 lost, 0.115 -> 0.125, and the rule keeps the
# compiler's. With a gate bias it holds 182 registers and every cap down to 168 lost (0.123 -> 0.132 ms at B8 T2048
# D768), so it keeps the compiler's (bench_results/probes_2026-12-02d/bias_backward.txt).
BD2_BACKWARD_REGISTERS = 144
BD2_BACKWARD_LEAST_REGISTERS = 128
# BD-LRU block size 2's backward in threads (and in segments) software-pipelines its tile loop as the forwards do:
# BD2_BACKWARD_STAGES stages, BD2_BACKWARD_SMALL_GRID_STAGES on grids of under SMALL_GRID_BELOW programs per SM, fewer
# where the buffers ((stages - 1) tiles of its 18 input rows a block: the logits of steps t + 1 and t, the states'
# gradients, values and states) would pass PIPELINE_SHARED_BYTES; its tile scan keeps an unpipelined loop. H200, bf16,
# % of copy forward+backward with 1 / 2 / 3 stages: B8 T4096 D1024 59.6 / 62.0 / 50.8, B32 T2048 D2048 62.8 / 65.8 /
# 54.3, B8 T2048 D768 55.2 / 57.2 / 58.1 (23 programs per SM), B2 T8192 D1024 45.9 / 48.9 / 52.0 (7.8), B1 T16384
# D1024 (2 runs a row) 40.3 / 40.8 / 42.3. The other backwards (H-LRU m = 1, 2 and 4, BD-LRU block size 4's adjoint
# scan) were best unpipelined or within 0.4 points of it at every shape, and up to 20 points behind pipelined (m = 2
# at 3 stages 62.8 -> 45.1 % at B8 T4096 D1024), so they keep their loops (bench_results/probes_2026-12-03c/stages.txt).
BD2_BACKWARD_STAGES = 2
BD2_BACKWARD_SMALL_GRID_STAGES = 3
# H-LRU m = 4 on grids of fewer than M4_CHUNKED_BELOW programs per SM splits each row into chunks of one tile joined
# by a look-back (`_look_back4`): B1 T16384 D1024's 128 programs become 8192. H200, % of copy forward /
# forward+backward, chunks against whole rows: 19.7 / 22.0 against 9.2 / 8.7 at 1.0 programs per SM (B1 T16384
# D1024), 18.6 / 21.8 against 17.6 / 16.8 at 1.9 (B2 T8192), 18.7 / 22.2 against 28.7 / 28.9 at 3.9 (B4 T4096); the
# threshold lies between the last two. Chunks run at 19-25 % whatever the grid (25 at B32 T2048 D2048, where rows
# reach 44): each program's short life (counter, loads, look-back, stores) bounds them. Chunks of 2-16 tiles, a
# first pass composing the chunk's map, were slower still (13-17 %; bench_results/probes_2026-12-02/). Under
# torch.use_deterministic_algorithms(True) rows are never chunked: a look-back composes whatever its predecessors
# have published by then, so the float32 roundings can differ between runs.
M4_CHUNKED_BELOW = 3
# H-LRU m = 4's forward on those small grids as whole rows whose tiles are runs of M4_TILE's steps, a warp each, joined
# across the warps (`_segment_carries4`), as many as bring the grid to M4_WARPS_PER_SM warps per SM (`_m2_segments`),
# instead of chunks, where that gives 2 runs or more (M4_SEGMENTS; the backward keeps its chunks). Unpipelined the runs
# had lost to the chunks (19.3 against 19.5 % of copy at B1 T16384 D1024 with 4 runs, probes_2026-12-02b/); pipelined,
# H200, % of copy forward, chunks / whole rows against 2 / 4 / 8 / 16 runs: 19.7 / 15.9 against 21.5 / 27.6 / 28.1 /
# 21.4 at 256 rows (B1 T16384 D1024), 18.5 / 30.2 against 30.0 / 31.0 / 27.9 / 21.2 at 512 (B2 T8192); the best at
# 15.5 warps per SM each time (bench_results/probes_2026-12-03b/segments.txt). At 16 warps per SM every small grid
# gets 2 runs or more, so the forward takes no chunks (they remain with M4_SEGMENTS off).
M4_SEGMENTS = True
M4_WARPS_PER_SM = 16
# Tests only: publish the prefix of every k-th chunk alone, so that look-backs compose maps (the interpreter runs the
# programs one after another, so otherwise every look-back finds its predecessor's prefix at once).
_PREFIX_EVERY = 1


EVEN_TILES = True  # tests and probes: False keeps the bounds masks on every launch


def _even(args: dict) -> bool:
    """Every tile of a time-last launch is whole: T a multiple of the tile's steps (BT, times SEGMENTS where a tile
    is a row's runs) and N of its channels (BC). Then the kernels' bounds masks are constant (`_in_bounds`).
    Taken by the kernels where it was faster on the H200 at B8 T4096 and B1 T16384 D1024 (same-process A/B,
    bench_results/probes_2026-12-03e/even_tiles.txt), forward: H-LRU m = 2 (-0.4 / +2.5 %) and 4
    (`_even_m4_forward`), BD-LRU 2 (+10.7 / +3.3 %) and 4 (+2.5 / +21 %); backward: BD-LRU 4 (forward+backward
    +15 / +6 %). H-LRU m = 1's and the other backwards keep their masks: unmasked they were as fast or up to 7.5 %
    slower (more registers: `probes_2026-12-03d/sass_even_tiles.txt`)."""
    return EVEN_TILES and args["T"] % (args["BT"] * args.get("SEGMENTS", 1)) == 0 and args["N"] % args["BC"] == 0


def _even_m4_forward(args: dict) -> bool:
    """`_even` for H-LRU m = 4's forward on whole rows (one run a tile): unmasked it was 6 % faster at B8 T4096 D1024
    (whole rows, 2 channels a program) but 15 % slower at B1 T16384 D1024, whose small grid runs each row's tile as
    8 runs, a warp each (`_segment_carries4`); launches of 2-4 runs were not measured and keep the masks."""
    return _even(args) and args["SEGMENTS"] == 1


if triton is not None:

    @triton.jit
    def _tile_offsets(T, N, BC: tl.constexpr):
        """(batch row b, row offsets [BC] into [B*N] rows, channel mask [BC]) of this program's channel block."""
        return _block_offsets(tl.program_id(0), N, BC)

    @triton.jit
    def _in_bounds(mc, steps, T, EVEN: tl.constexpr):
        """[rows, steps]: the tile's channel mask [rows] and steps [1 or rows, BT] within [0, T). EVEN (`_even`:
        every tile of the launch is whole) makes it a constant True, which the compiler folds out of the masked
        loads, stores and selects (H-LRU m = 2's forward: 62 -> 57 instructions per element, sm_90a SASS)."""
        return (mc[:, None] & (steps < T)) | EVEN

    @triton.jit
    def _block_offsets(index, N, BC: tl.constexpr):
        """`_tile_offsets` of channel block `index` (batch row index // ceil(N / BC)), for grids with more than one
        program per channel block."""
        blocks = tl.cdiv(N, BC)
        b = index // blocks
        n = (index % blocks) * BC + tl.arange(0, BC)
        return b.to(tl.int64), (b * N + n).to(tl.int64), n < N

    @triton.jit
    def _pick(x, t, step):
        """[BC]: x [BC, BT] at step `step` of the steps t [BT] (0 where no t equals it)."""
        return _pick_at(x, t[None, :], step)

    @triton.jit
    def _pick_at(x, steps, step):
        """[rows]: x [rows, BT] at step `step` of the steps `steps` (broadcast to x's shape; 0 where none equals it)."""
        return tl.sum(tl.where(steps == step, x, 0.0), axis=1)

    @triton.jit
    def _starts_at(starts, b, t, T, HAS_STARTS: tl.constexpr):
        """[1, BT] bool: a document starts at step t [BT] of batch row b (False outside [0, T), or without starts)."""
        return _starts_in(starts, b, t, T, HAS_STARTS)[None, :]

    @triton.jit
    def _starts_in(starts, b, steps, T, HAS_STARTS: tl.constexpr):
        """`_starts_at` for steps of any shape: bool of steps' shape."""
        if HAS_STARTS:
            start = tl.load(starts + b * T + steps, mask=(steps >= 0) & (steps < T), other=0) != 0
        else:
            start = steps != steps
        return start

    @triton.jit
    def _load_bias(gate_bias, rows, b, N, j, M1: tl.constexpr, mc, HAS_BIAS: tl.constexpr):
        """[BC] float32: the logit bias of gate j of rows' channels (row b*N + n: gate_bias[n, j]), 0 without one."""
        if HAS_BIAS:
            return tl.load(gate_bias + (rows - b * N) * M1 + j, mask=mc, other=0.0).to(tl.float32)
        return tl.zeros(rows.shape, dtype=tl.float32)

    @triton.jit
    def _store_bias_gradient(d_bias_rows, rows, j, M1: tl.constexpr, mc, sums):
        """This program's sum over its steps of gate j's logit gradients, for the host to sum over the batch rows."""
        tl.store(d_bias_rows + rows * M1 + j, sums, mask=mc)

    @triton.jit
    def _load_pair(gates, rows, t, mask, T, bias_coef, bias_gate, HAS_BIAS: tl.constexpr):
        """The normalisation's inputs at steps t [BT] of rows [BC]: coefficient and input-gate logits (plus their bias
        [BC]), float32."""
        coefficient_rows = (2 * rows)[:, None] * T + t[None, :]
        z_coef = tl.load(gates + coefficient_rows, mask=mask, other=0.0).to(tl.float32)
        z_gate = tl.load(gates + coefficient_rows + T, mask=mask, other=0.0).to(tl.float32)
        if HAS_BIAS:
            z_coef += bias_coef[:, None]
            z_gate += bias_gate[:, None]
        return z_coef, z_gate

    @triton.jit
    def _load_values(values, rows, t, mask, T):
        """values (or states, or their gradients) at steps t [BT] of rows [BC], float32."""
        return _load_values_at(values, rows, t[None, :], mask, T)

    @triton.jit
    def _load_values_at(values, rows, steps, mask, T):
        """`_load_values` at steps [1 or rows, BT] (a row's steps each, or one set for all)."""
        return tl.load(values + rows[:, None] * T + steps, mask=mask, other=0.0).to(tl.float32)

    @triton.jit
    def _time_last_fwd_kernel(gates, gate_bias, values, initial_state, starts, states, final_state, T, N,
                              ACT: tl.constexpr, BC: tl.constexpr, BT: tl.constexpr, STAGES: tl.constexpr,
                              HAS_BIAS: tl.constexpr, HAS_H0: tl.constexpr, WRITE_FINAL: tl.constexpr,
                              HAS_STARTS: tl.constexpr):
        """states[row, t] = a_t s_{t-1} + g_t v_t for BC rows, tiles of BT steps scanned in registers. STAGES: the
        tile loop's software pipeline (`tl.range`'s num_stages: the next STAGES - 1 tiles' loads in flight while this
        one is scanned; FORWARD_STAGES)."""
        b, rows, mc = _tile_offsets(T, N, BC)
        bias_coef = _load_bias(gate_bias, rows, b, N, 0, 2, mc, HAS_BIAS)
        bias_gate = _load_bias(gate_bias, rows, b, N, 1, 2, mc, HAS_BIAS)
        h = tl.zeros([BC], dtype=tl.float32)
        if HAS_H0:
            h = tl.load(initial_state + rows, mask=mc, other=0.0)
        for t0 in tl.range(0, T, BT, num_stages=STAGES):
            t = t0 + tl.arange(0, BT)
            mask = mc[:, None] & (t < T)[None, :]
            z_coef, z_gate = _load_pair(gates, rows, t, mask, T, bias_coef, bias_gate, HAS_BIAS)
            x = _load_values(values, rows, t, mask, T)
            a, g = _normalize_pair(z_coef, z_gate, ACT)
            a = tl.where(_starts_at(starts, b, t, T, HAS_STARTS), 0.0, a)  # a document starts from a zero state
            a = tl.where(mask, a, 1.0)  # steps past T: the identity
            u = tl.where(mask, g * x, 0.0)
            decay, local = tl.associative_scan((a, u), 1, _affine_combine)
            s = local + decay * h[:, None]
            tl.store(states + rows[:, None] * T + t[None, :], s.to(states.dtype.element_ty), mask=mask)
            h = _pick(s, t, t0 + BT - 1)  # identity past T: s at BT-1 = s_last
        if WRITE_FINAL:
            tl.store(final_state + rows, h, mask=mc)

    @triton.jit
    def _time_last_bwd_kernel(gates, gate_bias, values, states, initial_state, starts, d_states, d_final, d_gates,
                              d_values, d_initial_state, d_bias_rows, T, N, ACT: tl.constexpr, BC: tl.constexpr,
                              BT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_H0: tl.constexpr,
                              HAS_D_FINAL: tl.constexpr, HAS_STARTS: tl.constexpr):
        """The adjoint lam scanned from the end in tiles of BT steps; gate, value and initial-state gradients. The
        step's own inputs are loaded after the scan, not with its coefficients: on the H200, loading all seven before
        it was 2-7 % slower, and prefetching the tile before, 10-20 % (bench_results/probes_2026-11-30j)."""
        b, rows, mc = _tile_offsets(T, N, BC)
        bias_coef = _load_bias(gate_bias, rows, b, N, 0, 2, mc, HAS_BIAS)
        bias_gate = _load_bias(gate_bias, rows, b, N, 1, 2, mc, HAS_BIAS)
        # HAS_BIAS: the logit gradients summed over the steps. It makes the backward 14-31 % slower at m = 1 and
        # 50-58 % at m = 2 at the models' shape on the H200, less than the separate bias pass and reduction it
        # replaces; summing element-wise over the tiles instead cost about the same
        # (bench_results/probes_2026-11-30k/bias_in_scan/)
        d_bias_coef = tl.zeros([BC], dtype=tl.float32)
        d_bias_gate = tl.zeros([BC], dtype=tl.float32)
        carry = tl.zeros([BC], dtype=tl.float32)  # lam of the step after the tile (d_final after the last step)
        if HAS_D_FINAL:
            carry = tl.load(d_final + rows, mask=mc, other=0.0)
        h0 = tl.zeros([BC], dtype=tl.float32)
        if HAS_H0:
            h0 = tl.load(initial_state + rows, mask=mc, other=0.0)
        num_tiles = tl.cdiv(T, BT)
        for r in range(0, num_tiles):
            t0 = (num_tiles - 1 - r) * BT
            t = t0 + tl.arange(0, BT)
            mask = mc[:, None] & (t < T)[None, :]
            next_mask = mc[:, None] & (t + 1 < T)[None, :]
            z_coef_next, z_gate_next = _load_pair(gates, rows, t + 1, next_mask, T, bias_coef, bias_gate, HAS_BIAS)
            a_next, _ = _normalize_pair(z_coef_next, z_gate_next, ACT)
            a_next = tl.where(next_mask, a_next, 1.0)  # past the last step: d_final enters with a_T = 1
            a_next = tl.where(_starts_at(starts, b, t + 1, T, HAS_STARTS), 0.0, a_next)  # no flow across a start
            dy = _load_values(d_states, rows, t, mask, T)
            c = tl.where(mask, a_next, 1.0)
            d = tl.where(mask, dy, 0.0)
            c_cum, d_cum = tl.associative_scan((c, d), 1, _affine_combine, reverse=True)
            lam = d_cum + c_cum * carry[:, None]
            z_coef, z_gate = _load_pair(gates, rows, t, mask, T, bias_coef, bias_gate, HAS_BIAS)
            a, g = _normalize_pair(z_coef, z_gate, ACT)
            x = _load_values(values, rows, t, mask, T)
            s_previous = _load_values(states, rows, t - 1, mask & (t >= 1)[None, :], T)
            s_previous = tl.where((t >= 1)[None, :], s_previous, h0[:, None])
            start = _starts_at(starts, b, t, T, HAS_STARTS)
            s_previous = tl.where(start, 0.0, s_previous)
            dz_coef, dz_gate = _normalize_pair_bwd(z_coef, z_gate, lam * s_previous, lam * x, ACT)
            gate_rows = (2 * rows)[:, None] * T + t[None, :]
            tl.store(d_gates + gate_rows, dz_coef.to(d_gates.dtype.element_ty), mask=mask)
            tl.store(d_gates + gate_rows + T, dz_gate.to(d_gates.dtype.element_ty), mask=mask)
            tl.store(d_values + rows[:, None] * T + t[None, :], (lam * g).to(d_values.dtype.element_ty), mask=mask)
            if HAS_BIAS:
                d_bias_coef += tl.sum(tl.where(mask, dz_coef, 0.0), axis=1)
                d_bias_gate += tl.sum(tl.where(mask, dz_gate, 0.0), axis=1)
            first = (t == t0)[None, :]
            carry = tl.sum(tl.where(first, lam, 0.0), axis=1)
            if HAS_H0:
                if t0 == 0:
                    decay = tl.sum(tl.where(first & ~start, a, 0.0), axis=1)  # 0 if a document starts at step 0
                    tl.store(d_initial_state + rows, decay * carry, mask=mc)
        if HAS_BIAS:
            _store_bias_gradient(d_bias_rows, rows, 0, 2, mc, d_bias_coef)
            _store_bias_gradient(d_bias_rows, rows, 1, 2, mc, d_bias_gate)

    # ---- order 2: s_t = a1_t s_{t-1} + a2_t s_{t-2} + g_t v_t, i.e. the window u_t = (s_t, s_{t-1}) follows
    # u_t = M_t u_{t-1} + (g_t v_t, 0) with the companion matrix M_t = [[a1, a2], [1, 0]]; the scan composes (M, b).

    @triton.jit
    def _companion_combine(p_l, q_l, r_l, s_l, b1_l, b2_l, p_r, q_r, r_r, s_r, b1_r, b2_r):
        """(M_l, b_l) then (M_r, b_r): u -> M_r (M_l u + b_l) + b_r, M = [[p, q], [r, s]]."""
        return (p_r * p_l + q_r * r_l, p_r * q_l + q_r * s_l, r_r * p_l + s_r * r_l, r_r * q_l + s_r * s_l,
                p_r * b1_l + q_r * b2_l + b1_r, r_r * b1_l + s_r * b2_l + b2_r)

    @triton.jit
    def _load_triple(gates, rows, t, mask, T, bias1, bias2, bias_gate, HAS_BIAS: tl.constexpr):
        """The logits at steps t [BT] of rows [BC]: lag 1, lag 2, input gate (plus their bias [BC]), float32."""
        return _load_triple_at(gates, rows, t[None, :], mask, T, bias1, bias2, bias_gate, HAS_BIAS)

    @triton.jit
    def _load_triple_at(gates, rows, steps, mask, T, bias1, bias2, bias_gate, HAS_BIAS: tl.constexpr):
        """`_load_triple` at steps [1 or rows, BT]."""
        base = (3 * rows)[:, None] * T + steps
        z1 = tl.load(gates + base, mask=mask, other=0.0).to(tl.float32)
        z2 = tl.load(gates + base + T, mask=mask, other=0.0).to(tl.float32)
        zg = tl.load(gates + base + 2 * T, mask=mask, other=0.0).to(tl.float32)
        if HAS_BIAS:
            z1 += bias1[:, None]
            z2 += bias2[:, None]
            zg += bias_gate[:, None]
        return z1, z2, zg

    @triton.jit
    def _normalize_triple(z1, z2, zg, ACT: tl.constexpr):
        """(a1, a2, g): the group's normalisation. Softmax written out on the three tiles (as the measured probe
        computes it); the other activations through scan_triton's `_normalize` on the lags joined along a new axis."""
        if ACT == 0:
            top = tl.maximum(tl.maximum(z1, z2), zg)
            e1, e2, eg = _exp(z1 - top), _exp(z2 - top), _exp(zg - top)
            inv = _reciprocal(e1 + e2 + eg)  # >= 1 term is exp(0): finite
            a1, a2, g = e1 * inv, e2 * inv, eg * inv
        else:
            zc = tl.join(z1, z2)  # [BC, BT, 2]
            c, g = _normalize(zc, zg, tl.full(zc.shape, 1, tl.int1), 2, ACT, 2)
            a1, a2 = tl.split(c)
        return a1, a2, g

    @triton.jit
    def _normalize_triple_bwd(z1, z2, zg, d_a1, d_a2, d_g, ACT: tl.constexpr):
        """Gradient of the three logits from (d a1, d a2, d g); softmax: dz = c (dc - <c, dc>)."""
        if ACT == 0:
            a1, a2, g = _normalize_triple(z1, z2, zg, ACT)
            dot = a1 * d_a1 + a2 * d_a2 + g * d_g
            dz1, dz2, dzg = a1 * (d_a1 - dot), a2 * (d_a2 - dot), g * (d_g - dot)
        else:
            zc = tl.join(z1, z2)
            dzc, dzg = _normalize_bwd(zc, zg, tl.full(zc.shape, 1, tl.int1), tl.join(d_a1, d_a2), d_g, 2, ACT, 2)
            dz1, dz2 = tl.split(dzc)
        return dz1, dz2, dzg

    @triton.jit
    def _split_steps(x, BC: tl.constexpr, G: tl.constexpr):
        """[BC, 8 G] -> its 8 columns [BC, G], column k holding steps 8 g + k: each thread's 8 consecutive steps
        (with 8 or more elements per thread, the split moves no data)."""
        x = tl.reshape(x, [BC, G, 2, 2, 2])
        x0, x1 = tl.split(x)  # k = 4 i + 2 j + l: l first
        x00, x01 = tl.split(x0)
        x10, x11 = tl.split(x1)
        c0, c4 = tl.split(x00)
        c2, c6 = tl.split(x01)
        c1, c5 = tl.split(x10)
        c3, c7 = tl.split(x11)
        return c0, c1, c2, c3, c4, c5, c6, c7

    @triton.jit
    def _join_steps(c0, c1, c2, c3, c4, c5, c6, c7, BC: tl.constexpr, G: tl.constexpr):
        """The inverse of `_split_steps`."""
        x0 = tl.join(tl.join(c0, c4), tl.join(c2, c6))
        x1 = tl.join(tl.join(c1, c5), tl.join(c3, c7))
        return tl.reshape(tl.join(x0, x1), [BC, G * 8])

    @triton.jit
    def _step_sums(x, BC: tl.constexpr, G: tl.constexpr):
        """[BC, 8 G] -> [BC, G]: each group's sum of its 8 consecutive steps, added inside each thread where it holds
        them (in threads). The backwards keep their bias gradients so, reduced across the lanes once at the end: a
        warp-wide sum per tile made H-LRU m = 2's backward hold 111 registers instead of 96 and BD-LRU block size
        2's 190 instead of 142 (`ptxas`, Triton 3.6, sm_90)."""
        c0, c1, c2, c3, c4, c5, c6, c7 = _split_steps(x, BC, G)
        return ((c0 + c1) + (c2 + c3)) + ((c4 + c5) + (c6 + c7))

    @triton.jit
    def _companion_step(p, q, r, s, b1, b2, a1, a2, u, keep, HAS_STARTS: tl.constexpr):
        """(M, b) followed by one step u_t = [[a1, a2], [keep, 0]] u_{t-1} + (u, 0): 6 multiply-adds, the map's
        second row being the first row before (keep = 0 at a document's start, whose window restarts at zero)."""
        if HAS_STARTS:
            return a1 * p + a2 * r, a1 * q + a2 * s, keep * p, keep * q, a1 * b1 + a2 * b2 + u, keep * b1
        return a1 * p + a2 * r, a1 * q + a2 * s, p, q, a1 * b1 + a2 * b2 + u, b1

    @triton.jit
    def _m2_tile_maps(a1, a2, u, start, BC: tl.constexpr, BT: tl.constexpr, HAS_STARTS: tl.constexpr):
        """A tile of the window composed in threads, first half: each thread composes its 8 consecutive steps'
        companion maps one after another and only the BT / 8 group maps go through tl.associative_scan; returns the
        6 components [BC, BT / 8] of the maps from the tile's incoming window to the window after each group (the last
        group's: the tile's map), from which `_m2_tile_states` gives the states. a1 is zero at a document start (and
        a2 is zeroed there for the maps: the window's second entry is already 0); steps past T must have a1 = 1,
        a2 = 0."""
        G: tl.constexpr = BT // 8
        a1_0, a1_1, a1_2, a1_3, a1_4, a1_5, a1_6, a1_7 = _split_steps(a1, BC, G)
        u_0, u_1, u_2, u_3, u_4, u_5, u_6, u_7 = _split_steps(u, BC, G)
        m_0, m_1, m_2, m_3, m_4, m_5, m_6, m_7 = _split_steps(tl.where(start, 0.0, a2), BC, G)
        k_0, k_1, k_2, k_3, k_4, k_5, k_6, k_7 = _split_steps(tl.where(start, 0.0, 1.0), BC, G)
        one = tl.full([BC, G], 1.0, tl.float32)
        zero = tl.zeros([BC, G], tl.float32)
        p, q, r, s, b1, b2 = _companion_step(one, zero, zero, one, zero, zero, a1_0, m_0, u_0, k_0, HAS_STARTS)
        p, q, r, s, b1, b2 = _companion_step(p, q, r, s, b1, b2, a1_1, m_1, u_1, k_1, HAS_STARTS)
        p, q, r, s, b1, b2 = _companion_step(p, q, r, s, b1, b2, a1_2, m_2, u_2, k_2, HAS_STARTS)
        p, q, r, s, b1, b2 = _companion_step(p, q, r, s, b1, b2, a1_3, m_3, u_3, k_3, HAS_STARTS)
        p, q, r, s, b1, b2 = _companion_step(p, q, r, s, b1, b2, a1_4, m_4, u_4, k_4, HAS_STARTS)
        p, q, r, s, b1, b2 = _companion_step(p, q, r, s, b1, b2, a1_5, m_5, u_5, k_5, HAS_STARTS)
        p, q, r, s, b1, b2 = _companion_step(p, q, r, s, b1, b2, a1_6, m_6, u_6, k_6, HAS_STARTS)
        p, q, r, s, b1, b2 = _companion_step(p, q, r, s, b1, b2, a1_7, m_7, u_7, k_7, HAS_STARTS)
        return tl.associative_scan((p, q, r, s, b1, b2), 1, _companion_combine)

    @triton.jit
    def _m2_tile_states(a1, a2, u, start, start_before, maps, h1, h2, BC: tl.constexpr, BT: tl.constexpr):
        """Second half: the states [BC, BT] of a tile from its incoming window (h1, h2) [BC] and the group maps of
        `_m2_tile_maps`, the states one step before them (the window's second entry, not yet zeroed at document
        starts), and the window after its last step: each group's start window is the end window of the group before
        (tl.gather), and its 8 states follow from it at 2 multiply-adds each, a2 zero at a start and at the step
        after one (`start_before`). Steps past T must have a1 = 1, a2 = 0 (the window after them is then (s, s): the
        caller takes the final window from the states)."""
        G: tl.constexpr = BT // 8
        a1_0, a1_1, a1_2, a1_3, a1_4, a1_5, a1_6, a1_7 = _split_steps(a1, BC, G)
        u_0, u_1, u_2, u_3, u_4, u_5, u_6, u_7 = _split_steps(u, BC, G)
        p, q, r, s, b1, b2 = maps
        end1 = p * h1[:, None] + q * h2[:, None] + b1  # the window after each group
        end2 = r * h1[:, None] + s * h2[:, None] + b2
        group = tl.broadcast_to(tl.arange(0, G)[None, :], [BC, G])
        before = tl.maximum(group - 1, 0)
        w1 = tl.where(group == 0, h1[:, None], tl.gather(end1, before, 1))  # the window before each group
        w2 = tl.where(group == 0, h2[:, None], tl.gather(end2, before, 1))
        # the states: a2 is 0 at a start and at the step after one (that step's lag 2 is before the start)
        c_0, c_1, c_2, c_3, c_4, c_5, c_6, c_7 = _split_steps(tl.where(start | start_before, 0.0, a2), BC, G)
        s_0 = a1_0 * w1 + c_0 * w2 + u_0
        s_1 = a1_1 * s_0 + c_1 * w1 + u_1
        s_2 = a1_2 * s_1 + c_2 * s_0 + u_2
        s_3 = a1_3 * s_2 + c_3 * s_1 + u_3
        s_4 = a1_4 * s_3 + c_4 * s_2 + u_4
        s_5 = a1_5 * s_4 + c_5 * s_3 + u_5
        s_6 = a1_6 * s_5 + c_6 * s_4 + u_6
        s_7 = a1_7 * s_6 + c_7 * s_5 + u_7
        states = _join_steps(s_0, s_1, s_2, s_3, s_4, s_5, s_6, s_7, BC, G)
        previous = _join_steps(w1, s_0, s_1, s_2, s_3, s_4, s_5, s_6, BC, G)  # s_{t-1}, before a start's reset
        last = group == G - 1
        return states, previous, tl.sum(tl.where(last, end1, 0.0), axis=1), tl.sum(tl.where(last, end2, 0.0), axis=1)

    @triton.jit
    def _segment_carries(maps, c1, c2, REVERSE: tl.constexpr):
        """A tile's runs (rows of consecutive steps [SEGMENTS, BT], each composed in threads) joined across the rows:
        from the maps of a run's groups (6 x [SEGMENTS, G] of 2 x 2 affine maps, scanned within each run: the run's
        whole map at its last group, or its first in REVERSE) and the carry (c1, c2) entering the tile (every entry
        the same), the carry entering each run [SEGMENTS] and the one leaving the tile (every entry the same), the
        runs' maps composed by tl.associative_scan over the rows. REVERSE: the backward's runs, walked from the
        last. Forward: H-LRU m = 2's window (`_m2_tile_maps`), BD-LRU block size 2's state; in reverse the pair
        (lam, mu) (`_m2_adjoint_tile_maps`) or BD-LRU's adjoint."""
        G: tl.constexpr = maps[0].shape[1]
        group = tl.arange(0, G)[None, :]
        if REVERSE:
            edge = 0
        else:
            edge = G - 1
        p, q, r, s, b1, b2 = tl.associative_scan(  # the maps from the tile's carry to each run's outgoing one
            (_pick_at(maps[0], group, edge), _pick_at(maps[1], group, edge), _pick_at(maps[2], group, edge),
             _pick_at(maps[3], group, edge), _pick_at(maps[4], group, edge), _pick_at(maps[5], group, edge)),
            0, _companion_combine, reverse=REVERSE)
        entering1, leaving1 = _run_edges(p * c1 + q * c2 + b1, c1, REVERSE)
        entering2, leaving2 = _run_edges(r * c1 + s * c2 + b2, c2, REVERSE)
        return entering1, entering2, leaving1, leaving2

    @triton.jit
    def _run_edges(end, before_first, REVERSE: tl.constexpr):
        """(the value entering each run: `before_first` for the first, the run before's `end` for the others; the
        last run's end in every entry) for one component [SEGMENTS] of the runs' carries (`_segment_carries`). REVERSE
        (the backward's runs, walked from the last): the first run is the last, the run before is the one after."""
        segment = tl.arange(0, end.shape[0])
        if REVERSE:
            first, last, before = end.shape[0] - 1, 0, tl.minimum(segment + 1, end.shape[0] - 1)
        else:
            first, last, before = 0, end.shape[0] - 1, tl.maximum(segment - 1, 0)
        entering = tl.where(segment == first, before_first, tl.gather(end, before, 0))
        return entering, before_first * 0.0 + tl.sum(tl.where(segment == last, end, 0.0), axis=0)

    @triton.jit
    def _adjoint_step(p, q, r, s, b1, b2, a1, a2, dy):
        """One step back in time after (M, b): (lam, mu)_t = [[a1, 1], [a2, 0]]_{t+1} (lam, mu)_{t+1} + (dy_t, 0)
        applied after the map from the carry to (lam, mu)_{t+1}."""
        return a1 * p + r, a1 * q + s, a2 * p, a2 * q, a1 * b1 + b2 + dy, a2 * b1

    @triton.jit
    def _m2_adjoint_tile_maps(a1, a2, dy, BC: tl.constexpr, BT: tl.constexpr):
        """The backward's `_m2_tile_maps`: the 6 components [BC, BT / 8] of the maps from the pair (lam, mu) after a
        tile's last step to the pair at each group's first step (the first group's: the tile's map), from which
        `_m2_adjoint_tile_states` gives the adjoints. a1 = a1_{t+1}, a2 = a2_{t+1} and dy as the maps use them (0 past
        T, where the carry into the last tile is 0 and stays 0). Each thread composes its 8 steps from the last one
        back, and the group maps go through tl.associative_scan in reverse."""
        G: tl.constexpr = BT // 8
        a1_0, a1_1, a1_2, a1_3, a1_4, a1_5, a1_6, a1_7 = _split_steps(a1, BC, G)
        a2_0, a2_1, a2_2, a2_3, a2_4, a2_5, a2_6, a2_7 = _split_steps(a2, BC, G)
        d_0, d_1, d_2, d_3, d_4, d_5, d_6, d_7 = _split_steps(dy, BC, G)
        one = tl.full([BC, G], 1.0, tl.float32)
        zero = tl.zeros([BC, G], tl.float32)
        p, q, r, s, b1, b2 = _adjoint_step(one, zero, zero, one, zero, zero, a1_7, a2_7, d_7)
        p, q, r, s, b1, b2 = _adjoint_step(p, q, r, s, b1, b2, a1_6, a2_6, d_6)
        p, q, r, s, b1, b2 = _adjoint_step(p, q, r, s, b1, b2, a1_5, a2_5, d_5)
        p, q, r, s, b1, b2 = _adjoint_step(p, q, r, s, b1, b2, a1_4, a2_4, d_4)
        p, q, r, s, b1, b2 = _adjoint_step(p, q, r, s, b1, b2, a1_3, a2_3, d_3)
        p, q, r, s, b1, b2 = _adjoint_step(p, q, r, s, b1, b2, a1_2, a2_2, d_2)
        p, q, r, s, b1, b2 = _adjoint_step(p, q, r, s, b1, b2, a1_1, a2_1, d_1)
        p, q, r, s, b1, b2 = _adjoint_step(p, q, r, s, b1, b2, a1_0, a2_0, d_0)
        return tl.associative_scan((p, q, r, s, b1, b2), 1, _companion_combine, reverse=True)

    @triton.jit
    def _m2_adjoint_tile_states(a1, a2, dy, maps, c1, c2, BC: tl.constexpr, BT: tl.constexpr):
        """Second half: lam [BC, BT] of a tile from the pair (lam, mu) after its last step (c1, c2) [BC] and the maps
        of `_m2_adjoint_tile_maps`, and the pair at its first step: each group's carry is the pair at the first step
        of the group after it (tl.gather), and its 8 adjoints follow from it at 3 operations each."""
        G: tl.constexpr = BT // 8
        a1_0, a1_1, a1_2, a1_3, a1_4, a1_5, a1_6, a1_7 = _split_steps(a1, BC, G)
        a2_0, a2_1, a2_2, a2_3, a2_4, a2_5, a2_6, a2_7 = _split_steps(a2, BC, G)
        d_0, d_1, d_2, d_3, d_4, d_5, d_6, d_7 = _split_steps(dy, BC, G)
        p, q, r, s, b1, b2 = maps
        first1 = p * c1[:, None] + q * c2[:, None] + b1  # (lam, mu) at each group's first step
        first2 = r * c1[:, None] + s * c2[:, None] + b2
        group = tl.broadcast_to(tl.arange(0, G)[None, :], [BC, G])
        after = tl.minimum(group + 1, G - 1)
        lam_after = tl.where(group == G - 1, c1[:, None], tl.gather(first1, after, 1))  # the pair after each group
        mu_after = tl.where(group == G - 1, c2[:, None], tl.gather(first2, after, 1))
        l_7 = a1_7 * lam_after + mu_after + d_7
        l_6 = a1_6 * l_7 + a2_7 * lam_after + d_6
        l_5 = a1_5 * l_6 + a2_6 * l_7 + d_5
        l_4 = a1_4 * l_5 + a2_5 * l_6 + d_4
        l_3 = a1_3 * l_4 + a2_4 * l_5 + d_3
        l_2 = a1_2 * l_3 + a2_3 * l_4 + d_2
        l_1 = a1_1 * l_2 + a2_2 * l_3 + d_1
        l_0 = a1_0 * l_1 + a2_1 * l_2 + d_0
        lam = _join_steps(l_0, l_1, l_2, l_3, l_4, l_5, l_6, l_7, BC, G)
        head = group == 0
        mu_0 = a2_0 * l_1
        return lam, tl.sum(tl.where(head, l_0, 0.0), axis=1), tl.sum(tl.where(head, mu_0, 0.0), axis=1)

    @triton.jit
    def _first_run(x, SEGMENTS: tl.constexpr):
        """x [rows]; with segments (the rows one channel's runs) its first run's entry, a scalar."""
        if SEGMENTS > 1:
            x = tl.sum(tl.where(tl.arange(0, SEGMENTS) == 0, x, 0.0), axis=0)
        return x

    @triton.heuristics({"EVEN": _even})
    @triton.jit
    def _time_last_m2_fwd_kernel(gates, gate_bias, values, initial_state, starts, states, final_state, T, N,
                                 ACT: tl.constexpr, BC: tl.constexpr, BT: tl.constexpr, SEGMENTS: tl.constexpr,
                                 STAGES: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_H0: tl.constexpr,
                                 WRITE_FINAL: tl.constexpr, HAS_STARTS: tl.constexpr, WINDOW: tl.constexpr,
                                 EVEN: tl.constexpr):
        """states[row, t] = a1 s_{t-1} + a2 s_{t-2} + g v for BC rows; initial / final window (s, s_previous). The
        tile's recurrence is composed 8 steps at a time inside each thread (`_m2_tile_maps`, `_m2_tile_states`);
        STAGES as at m = 1. SEGMENTS (one channel a program): a tile is SEGMENTS consecutive runs of BT steps, a warp
        each, each composed in threads, the runs' maps then composed across the warps (`_segment_carries`), so that a
        row runs on SEGMENTS warps.
        WINDOW: states is [B, N, 2, T], the window (s_t, s_{t-1}) at every step (s_{t-1} = 0 where a document
        starts), what the read-out is."""
        tl.static_assert(SEGMENTS == 1 or BC == 1, "segments run one channel a program")
        R: tl.constexpr = BC * SEGMENTS  # a tile's rows: BC channels, or one channel's SEGMENTS runs
        SPAN: tl.constexpr = BT * SEGMENTS  # a tile's steps
        b, rows, mc = _tile_offsets(T, N, BC)
        bias1 = _load_bias(gate_bias, rows, b, N, 0, 3, mc, HAS_BIAS)
        bias2 = _load_bias(gate_bias, rows, b, N, 1, 3, mc, HAS_BIAS)
        bias_gate = _load_bias(gate_bias, rows, b, N, 2, 3, mc, HAS_BIAS)
        h1 = tl.zeros([R], dtype=tl.float32)  # s_{t-1} (with segments: the tile's, in every entry)
        h2 = tl.zeros([R], dtype=tl.float32)  # s_{t-2}
        if HAS_H0:
            h1 += tl.load(initial_state + 2 * rows, mask=mc, other=0.0)
            h2 += tl.load(initial_state + 2 * rows + 1, mask=mc, other=0.0)
        final1 = tl.zeros([R], dtype=tl.float32)  # the final window, from the last tile's states
        final2 = tl.zeros([R], dtype=tl.float32)
        lane = (tl.arange(0, SEGMENTS) * BT)[:, None] + tl.arange(0, BT)[None, :]  # [SEGMENTS, BT]: steps in a tile
        for t0 in tl.range(0, T, SPAN, num_stages=STAGES):
            steps = t0 + lane
            mask = _in_bounds(mc, steps, T, EVEN)
            z1, z2, zg = _load_triple_at(gates, rows, steps, mask, T, bias1, bias2, bias_gate, HAS_BIAS)
            x = _load_values_at(values, rows, steps, mask, T)
            a1, a2, g = _normalize_triple(z1, z2, zg, ACT)
            start = tl.broadcast_to(_starts_in(starts, b, steps, T, HAS_STARTS), [R, BT])
            start_before = tl.broadcast_to(_starts_in(starts, b, steps - 1, T, HAS_STARTS), [R, BT])
            a1 = tl.where(mask, tl.where(start, 0.0, a1), 1.0)  # steps past T: a1 = 1, a2 = 0
            a2 = tl.where(mask, a2, 0.0)
            u = tl.where(mask, g * x, 0.0)
            maps = _m2_tile_maps(a1, a2, u, start, R, BT, HAS_STARTS)
            if SEGMENTS > 1:  # each run's incoming window from the tile's, and the tile's outgoing one
                h1, h2, h1_next, h2_next = _segment_carries(maps, h1, h2, REVERSE=False)
            new1, new2, out1, out2 = _m2_tile_states(a1, a2, u, start, start_before, maps, h1, h2, R, BT)
            if SEGMENTS == 1:
                h1_next, h2_next = out1, out2
            new2 = tl.where(start, 0.0, new2)  # the window's second entry
            if t0 + SPAN >= T:  # the last tile: the final window (s_{T-1}, s_{T-2}) is the window at step T - 1
                final1, final2 = _pick_at(new1, steps, T - 1), _pick_at(new2, steps, T - 1)
            h1, h2 = h1_next, h2_next
            if WINDOW:
                tl.store(states + (2 * rows)[:, None] * T + steps, new1.to(states.dtype.element_ty), mask=mask)
                tl.store(states + (2 * rows + 1)[:, None] * T + steps, new2.to(states.dtype.element_ty), mask=mask)
            else:
                tl.store(states + rows[:, None] * T + steps, new1.to(states.dtype.element_ty), mask=mask)
        if WRITE_FINAL:
            h1, h2 = final1, final2
            if SEGMENTS > 1:  # one run holds step T - 1
                h1, h2 = tl.sum(h1, axis=0), tl.sum(h2, axis=0)
            tl.store(final_state + 2 * rows, h1, mask=mc)
            tl.store(final_state + 2 * rows + 1, h2, mask=mc)

    @triton.jit
    def _time_last_m2_bwd_kernel(gates, gate_bias, values, states, initial_state, starts, d_states, d_final, d_gates,
                                 d_values, d_initial_state, d_bias_rows, T, N, ACT: tl.constexpr, BC: tl.constexpr,
                                 BT: tl.constexpr, SEGMENTS: tl.constexpr,
                                 HAS_BIAS: tl.constexpr, HAS_H0: tl.constexpr, HAS_D_FINAL: tl.constexpr,
                                 HAS_STARTS: tl.constexpr, WINDOW: tl.constexpr):
        """The adjoint lam_t = dy_t + a1_{t+1} lam_{t+1} + a2_{t+2} lam_{t+2}, scanned in reverse time as the pair
        (lam_t, mu_t) with mu_t = a2_{t+1} lam_{t+1}: (lam, mu)_t = [[a1, 1], [a2, 0]]_{t+1} (lam, mu)_{t+1} + (dy_t,
        0), whose maps need the logits of step t + 1 only (the companion form [[a1_{t+1}, a2_{t+2}], [1, 0]] on
        (lam_t, lam_{t+1}) needs those of t + 2 as well). The final window's gradient enters as extra dy at steps
        T-1 and T-2 (at T = 1 the second goes to the initial window). The tile's adjoints are composed 8 steps at a
        time inside each thread (`_m2_adjoint_tile_maps`, `_m2_adjoint_tile_states`). SEGMENTS (one channel a
        program): a tile is SEGMENTS consecutive runs of BT steps, a warp each, joined across the warps
        (`_segment_carries`), as the forward's.
        WINDOW: states and d_states are [B, N, 2, T] windows (s_t, s_{t-1}); the gradient of s_{t-1} at step t + 1
        joins s_t's (unless a document starts at t + 1), at step 0 the initial window's."""
        tl.static_assert(SEGMENTS == 1 or BC == 1, "segments run one channel a program")
        R: tl.constexpr = BC * SEGMENTS  # a tile's rows: BC channels, or one channel's SEGMENTS runs
        SPAN: tl.constexpr = BT * SEGMENTS  # a tile's steps
        b, rows, mc = _tile_offsets(T, N, BC)
        state_rows = rows  # s_t's row in states and d_states
        if WINDOW:
            state_rows = 2 * rows
        bias1 = _load_bias(gate_bias, rows, b, N, 0, 3, mc, HAS_BIAS)
        bias2 = _load_bias(gate_bias, rows, b, N, 1, 3, mc, HAS_BIAS)
        bias_gate = _load_bias(gate_bias, rows, b, N, 2, 3, mc, HAS_BIAS)
        G: tl.constexpr = BT // 8
        d_bias1 = tl.zeros([R, G], dtype=tl.float32)  # HAS_BIAS: the logit gradients summed per group of 8 steps
        d_bias2 = tl.zeros([R, G], dtype=tl.float32)
        d_bias_gate = tl.zeros([R, G], dtype=tl.float32)
        c1 = tl.zeros([R], dtype=tl.float32)  # lam at the step after the tile (with segments: in every entry)
        c2 = tl.zeros([R], dtype=tl.float32)  # mu there
        h1 = tl.zeros([BC], dtype=tl.float32)
        h2 = tl.zeros([BC], dtype=tl.float32)
        if HAS_H0:
            h1 = tl.load(initial_state + 2 * rows, mask=mc, other=0.0)
            h2 = tl.load(initial_state + 2 * rows + 1, mask=mc, other=0.0)
        df1 = tl.zeros([BC], dtype=tl.float32)
        df2 = tl.zeros([BC], dtype=tl.float32)
        if HAS_D_FINAL:
            df1 = tl.load(d_final + 2 * rows, mask=mc, other=0.0)
            df2 = tl.load(d_final + 2 * rows + 1, mask=mc, other=0.0)
        lane = (tl.arange(0, SEGMENTS) * BT)[:, None] + tl.arange(0, BT)[None, :]  # [SEGMENTS, BT]: steps in a tile
        num_tiles = tl.cdiv(T, SPAN)
        for r in range(0, num_tiles):
            t0 = (num_tiles - 1 - r) * SPAN
            steps = t0 + lane
            mask = mc[:, None] & (steps < T)
            mask1 = mc[:, None] & (steps + 1 < T)
            y1, y2, yg = _load_triple_at(gates, rows, steps + 1, mask1, T, bias1, bias2, bias_gate, HAS_BIAS)
            a1_next, a2_next, _ = _normalize_triple(y1, y2, yg, ACT)  # a1_{t+1}, a2_{t+1}
            dy = _load_values_at(d_states, state_rows, steps, mask, T)
            start = _starts_in(starts, b, steps, T, HAS_STARTS)
            start_next = _starts_in(starts, b, steps + 1, T, HAS_STARTS)  # no flow back across a document start
            if WINDOW:  # s_t is also the window's second entry at step t + 1
                dy += tl.where(start_next, 0.0, _load_values_at(d_states, state_rows + 1, steps + 1, mask1, T))
            # the final window (s_{T-1}, s_{T-2}); its second entry is 0 if a document starts at the last step
            dy += tl.where(steps == T - 1, df1[:, None], 0.0)
            dy += tl.where((steps == T - 2) & ~start_next, df2[:, None], 0.0)
            # step t+1 reads s_t (lag 1) unless a document starts at t+1, s_{t-1} (lag 2) unless one starts at t+1 or t
            rr = tl.where(mask1 & ~start_next & ~start, a2_next, 0.0)
            a1_next = tl.where(mask1 & ~start_next, a1_next, 0.0)
            dy = tl.where(mask, dy, 0.0)
            maps = _m2_adjoint_tile_maps(a1_next, rr, dy, R, BT)
            if SEGMENTS > 1:  # the pair after each run from the pair after the tile, and the tile's first pair
                c1, c2, c1_next, c2_next = _segment_carries(maps, c1, c2, REVERSE=True)
            lam, first1, first2 = _m2_adjoint_tile_states(a1_next, rr, dy, maps, c1, c2, R, BT)
            if SEGMENTS == 1:
                c1_next, c2_next = first1, first2
            # the step's own inputs after the scan (fewer registers live across it, as at m = 1)
            z1, z2, zg = _load_triple_at(gates, rows, steps, mask, T, bias1, bias2, bias_gate, HAS_BIAS)
            a1, a2, g = _normalize_triple(z1, z2, zg, ACT)
            x = _load_values_at(values, rows, steps, mask, T)
            s1 = _load_values_at(states, state_rows, steps - 1, mask & (steps >= 1), T)
            s2 = _load_values_at(states, state_rows, steps - 2, mask & (steps >= 2), T)
            s1 = tl.where(steps >= 1, s1, h1[:, None])  # s_{t-1}; s_{-1} is the window's first entry
            s2 = tl.where(steps >= 2, s2, tl.where(steps == 1, h1[:, None], h2[:, None]))
            start_before = start | _starts_in(starts, b, steps - 1, T, HAS_STARTS)
            s1 = tl.where(start, 0.0, s1)  # a document's window starts at zero
            s2 = tl.where(start_before, 0.0, s2)
            dz1, dz2, dzg = _normalize_triple_bwd(z1, z2, zg, lam * s1, lam * s2, lam * x, ACT)
            gate_rows = (3 * rows)[:, None] * T + steps
            tl.store(d_gates + gate_rows, dz1.to(d_gates.dtype.element_ty), mask=mask)
            tl.store(d_gates + gate_rows + T, dz2.to(d_gates.dtype.element_ty), mask=mask)
            tl.store(d_gates + gate_rows + 2 * T, dzg.to(d_gates.dtype.element_ty), mask=mask)
            tl.store(d_values + rows[:, None] * T + steps, (lam * g).to(d_values.dtype.element_ty), mask=mask)
            if HAS_BIAS:
                d_bias1 += _step_sums(tl.where(mask, dz1, 0.0), R, G)
                d_bias2 += _step_sums(tl.where(mask, dz2, 0.0), R, G)
                d_bias_gate += _step_sums(tl.where(mask, dzg, 0.0), R, G)
            first = steps == t0
            c1, c2 = c1_next, c2_next
            if HAS_H0:
                if t0 == 0:
                    # s_0 = a1_0 h1 + a2_0 h2 + ..., s_1 = ... + a2_1 h1: d h1 = a1_0 lam_0 + mu_0, d h2 = a2_0 lam_0
                    # (with segments the first run holds step 0, and c1, c2 are the same in every entry)
                    a1_0 = _first_run(tl.sum(tl.where(first & ~start, a1, 0.0), axis=1), SEGMENTS)  # 0 at a start
                    a2_0 = _first_run(tl.sum(tl.where(first & ~start, a2, 0.0), axis=1), SEGMENTS)
                    lam_0, mu_0 = _first_run(c1, SEGMENTS), _first_run(c2, SEGMENTS)
                    reset = _first_run(tl.sum(tl.where(first & start, 1.0, 0.0), axis=1), SEGMENTS) > 0  # start at 0
                    d_first = a1_0 * lam_0 + mu_0 + tl.zeros([BC], dtype=tl.float32)  # [BC] (the runtime if below)
                    if WINDOW:  # the window's second entry at step 0 is the initial window's first
                        d_window_0 = tl.load(d_states + (state_rows + 1) * T, mask=mc, other=0.0).to(tl.float32)
                        d_first += tl.where(reset, 0.0, d_window_0)
                    if T == 1:  # the final window's second entry is the initial window's first (unless reset)
                        d_first += tl.where(reset, 0.0, df2)
                    tl.store(d_initial_state + 2 * rows, d_first, mask=mc)
                    tl.store(d_initial_state + 2 * rows + 1, a2_0 * lam_0, mask=mc)
        if HAS_BIAS:
            d_bias1, d_bias2, d_bias_gate = tl.sum(d_bias1, axis=1), tl.sum(d_bias2, axis=1), tl.sum(d_bias_gate, axis=1)
            if SEGMENTS > 1:  # the runs' sums
                d_bias1, d_bias2 = tl.sum(d_bias1, axis=0), tl.sum(d_bias2, axis=0)
                d_bias_gate = tl.sum(d_bias_gate, axis=0)
            _store_bias_gradient(d_bias_rows, rows, 0, 3, mc, d_bias1)
            _store_bias_gradient(d_bias_rows, rows, 1, 3, mc, d_bias2)
            _store_bias_gradient(d_bias_rows, rows, 2, 3, mc, d_bias_gate)

    # ---- order 4: the window u_t = (s_t, s_{t-1}, s_{t-2}, s_{t-3}) follows u_t = keep_t C_t u_{t-1} + (g_t v_t, 0,
    # 0, 0), C the 4 x 4 companion matrix of (a1, a2, a3, a4), keep_t = 0 where a document starts; composed in threads
    # as m = 2's (8 steps per thread, the groups' maps scanned across the warp), only in threads.

    @triton.jit
    def _load_five(gates, rows, t, mask, T, bias1, bias2, bias3, bias4, bias_gate, HAS_BIAS: tl.constexpr):
        """The logits at steps t [BT] of rows [BC]: lags 1-4, input gate (plus their bias [BC]), float32."""
        return _load_five_at(gates, rows, t[None, :], mask, T, bias1, bias2, bias3, bias4, bias_gate, HAS_BIAS)

    @triton.jit
    def _load_five_at(gates, rows, steps, mask, T, bias1, bias2, bias3, bias4, bias_gate, HAS_BIAS: tl.constexpr):
        """`_load_five` at steps [1 or rows, BT]."""
        base = (5 * rows)[:, None] * T + steps
        z1 = tl.load(gates + base, mask=mask, other=0.0).to(tl.float32)
        z2 = tl.load(gates + base + T, mask=mask, other=0.0).to(tl.float32)
        z3 = tl.load(gates + base + 2 * T, mask=mask, other=0.0).to(tl.float32)
        z4 = tl.load(gates + base + 3 * T, mask=mask, other=0.0).to(tl.float32)
        zg = tl.load(gates + base + 4 * T, mask=mask, other=0.0).to(tl.float32)
        if HAS_BIAS:
            z1 += bias1[:, None]
            z2 += bias2[:, None]
            z3 += bias3[:, None]
            z4 += bias4[:, None]
            zg += bias_gate[:, None]
        return z1, z2, z3, z4, zg

    @triton.jit
    def _join_lags(z1, z2, z3, z4):
        """Four [BC, BT] -> [BC, BT, 4] (lag k - 1 at index k - 1)."""
        zc = tl.join(tl.join(z1, z2), tl.join(z3, z4))  # [BC, BT, 2, 2]
        return tl.reshape(zc, [z1.shape[0], z1.shape[1], 4])

    @triton.jit
    def _split_lags(zc):
        """The inverse of `_join_lags`."""
        first, second = tl.split(tl.reshape(zc, [zc.shape[0], zc.shape[1], 2, 2]))
        z1, z2 = tl.split(first)
        z3, z4 = tl.split(second)
        return z1, z2, z3, z4

    @triton.jit
    def _normalize_five(z1, z2, z3, z4, zg, ACT: tl.constexpr):
        """(a1, a2, a3, a4, g): the group's normalisation. Softmax written out on the five tiles; the other
        activations through scan_triton's `_normalize` on the lags joined along a new axis."""
        if ACT == 0:
            top = tl.maximum(tl.maximum(tl.maximum(z1, z2), tl.maximum(z3, z4)), zg)
            e1, e2, e3, e4, eg = _exp(z1 - top), _exp(z2 - top), _exp(z3 - top), _exp(z4 - top), _exp(zg - top)
            inv = _reciprocal(e1 + e2 + e3 + e4 + eg)  # >= 1 term is exp(0): finite
            a1, a2, a3, a4, g = e1 * inv, e2 * inv, e3 * inv, e4 * inv, eg * inv
        else:
            zc = _join_lags(z1, z2, z3, z4)
            c, g = _normalize(zc, zg, tl.full(zc.shape, 1, tl.int1), 4, ACT, 2)
            a1, a2, a3, a4 = _split_lags(c)
        return a1, a2, a3, a4, g

    @triton.jit
    def _normalize_five_bwd(z1, z2, z3, z4, zg, d1, d2, d3, d4, dg, ACT: tl.constexpr):
        """Gradient of the five logits from (d a1, ..., d a4, d g); softmax: dz = c (dc - <c, dc>)."""
        if ACT == 0:
            a1, a2, a3, a4, g = _normalize_five(z1, z2, z3, z4, zg, ACT)
            dot = a1 * d1 + a2 * d2 + a3 * d3 + a4 * d4 + g * dg
            dz1, dz2, dz3, dz4, dzg = a1 * (d1 - dot), a2 * (d2 - dot), a3 * (d3 - dot), a4 * (d4 - dot), g * (dg - dot)
        else:
            zc = _join_lags(z1, z2, z3, z4)
            dzc, dzg = _normalize_bwd(zc, zg, tl.full(zc.shape, 1, tl.int1), _join_lags(d1, d2, d3, d4), dg, 4, ACT, 2)
            dz1, dz2, dz3, dz4 = _split_lags(dzc)
        return dz1, dz2, dz3, dz4, dzg

    @triton.jit
    def _load_four(vectors, rows, mc, PRESENT: tl.constexpr):
        """The four float32 entries [BC] of rows' vectors in `vectors` [B * N, 4] (an H-LRU m = 4 window, a BD-LRU
        block-4 state, or their gradients), zeros where not PRESENT."""
        if PRESENT:
            return (tl.load(vectors + 4 * rows, mask=mc, other=0.0), tl.load(vectors + 4 * rows + 1, mask=mc, other=0.0),
                    tl.load(vectors + 4 * rows + 2, mask=mc, other=0.0),
                    tl.load(vectors + 4 * rows + 3, mask=mc, other=0.0))
        zero = tl.zeros(rows.shape, dtype=tl.float32)
        return zero, zero, zero, zero

    @triton.jit
    def _store_four(vectors, rows, mc, x0, x1, x2, x3):
        """`_load_four`'s inverse: (x0, x1, x2, x3) [BC] into rows' vectors."""
        tl.store(vectors + 4 * rows, x0, mask=mc)
        tl.store(vectors + 4 * rows + 1, x1, mask=mc)
        tl.store(vectors + 4 * rows + 2, x2, mask=mc)
        tl.store(vectors + 4 * rows + 3, x3, mask=mc)

    @triton.jit
    def _companion4_step(m00, m01, m02, m03, m10, m11, m12, m13, m20, m21, m22, m23, m30, m31, m32, m33,
                         b0, b1, b2, b3, a1, a2, a3, a4, u, keep):
        """(M, b) followed by one step u_t = keep C u_{t-1} + (u, 0, 0, 0), C = [[a1, a2, a3, a4], [1, 0, 0, 0],
        [0, 1, 0, 0], [0, 0, 1, 0]]: the first row becomes a . M (a zero at a start), the others shift down times
        keep."""
        return (a1 * m00 + a2 * m10 + a3 * m20 + a4 * m30, a1 * m01 + a2 * m11 + a3 * m21 + a4 * m31,
                a1 * m02 + a2 * m12 + a3 * m22 + a4 * m32, a1 * m03 + a2 * m13 + a3 * m23 + a4 * m33,
                keep * m00, keep * m01, keep * m02, keep * m03, keep * m10, keep * m11, keep * m12, keep * m13,
                keep * m20, keep * m21, keep * m22, keep * m23,
                a1 * b0 + a2 * b1 + a3 * b2 + a4 * b3 + u, keep * b0, keep * b1, keep * b2)

    @triton.jit
    def _companion4_combine(m00_l, m01_l, m02_l, m03_l, m10_l, m11_l, m12_l, m13_l, m20_l, m21_l, m22_l, m23_l,
                            m30_l, m31_l, m32_l, m33_l, b0_l, b1_l, b2_l, b3_l,
                            m00_r, m01_r, m02_r, m03_r, m10_r, m11_r, m12_r, m13_r, m20_r, m21_r, m22_r, m23_r,
                            m30_r, m31_r, m32_r, m33_r, b0_r, b1_r, b2_r, b3_r):
        """(M_l, b_l) then (M_r, b_r): u -> M_r (M_l u + b_l) + b_r, 4 x 4."""
        return (m00_r * m00_l + m01_r * m10_l + m02_r * m20_l + m03_r * m30_l,
                m00_r * m01_l + m01_r * m11_l + m02_r * m21_l + m03_r * m31_l,
                m00_r * m02_l + m01_r * m12_l + m02_r * m22_l + m03_r * m32_l,
                m00_r * m03_l + m01_r * m13_l + m02_r * m23_l + m03_r * m33_l,
                m10_r * m00_l + m11_r * m10_l + m12_r * m20_l + m13_r * m30_l,
                m10_r * m01_l + m11_r * m11_l + m12_r * m21_l + m13_r * m31_l,
                m10_r * m02_l + m11_r * m12_l + m12_r * m22_l + m13_r * m32_l,
                m10_r * m03_l + m11_r * m13_l + m12_r * m23_l + m13_r * m33_l,
                m20_r * m00_l + m21_r * m10_l + m22_r * m20_l + m23_r * m30_l,
                m20_r * m01_l + m21_r * m11_l + m22_r * m21_l + m23_r * m31_l,
                m20_r * m02_l + m21_r * m12_l + m22_r * m22_l + m23_r * m32_l,
                m20_r * m03_l + m21_r * m13_l + m22_r * m23_l + m23_r * m33_l,
                m30_r * m00_l + m31_r * m10_l + m32_r * m20_l + m33_r * m30_l,
                m30_r * m01_l + m31_r * m11_l + m32_r * m21_l + m33_r * m31_l,
                m30_r * m02_l + m31_r * m12_l + m32_r * m22_l + m33_r * m32_l,
                m30_r * m03_l + m31_r * m13_l + m32_r * m23_l + m33_r * m33_l,
                m00_r * b0_l + m01_r * b1_l + m02_r * b2_l + m03_r * b3_l + b0_r,
                m10_r * b0_l + m11_r * b1_l + m12_r * b2_l + m13_r * b3_l + b1_r,
                m20_r * b0_l + m21_r * b1_l + m22_r * b2_l + m23_r * b3_l + b2_r,
                m30_r * b0_l + m31_r * b1_l + m32_r * b2_l + m33_r * b3_l + b3_r)

    @triton.jit
    def _identity4(BC: tl.constexpr, G: tl.constexpr):
        """The identity map (I, 0) of a 4-vector, as the 20 components [BC, G] that the maps' steps take."""
        one = tl.full([BC, G], 1.0, tl.float32)
        zero = tl.zeros([BC, G], tl.float32)
        return (one, zero, zero, zero, zero, one, zero, zero, zero, zero, one, zero, zero, zero, zero, one,
                zero, zero, zero, zero)

    @triton.jit
    def _apply4(m0, m1, m2, m3, b, w0, w1, w2, w3):
        """Row (m0, m1, m2, m3 | b) [BC, G] of a map applied to the window (w0, w1, w2, w3) [BC]."""
        return m0 * w0[:, None] + m1 * w1[:, None] + m2 * w2[:, None] + m3 * w3[:, None] + b

    @triton.jit
    def _m4_state_step(w0, w1, w2, w3, a1, a2, a3, a4, u, keep):
        """One step of the window in a thread: (s, keep w0, keep w1, keep w2), s = a . w + u (a zero at a start)."""
        return a1 * w0 + a2 * w1 + a3 * w2 + a4 * w3 + u, keep * w0, keep * w1, keep * w2

    @triton.jit
    def _m4_tile_maps(a1, a2, a3, a4, u, keep, BC: tl.constexpr, BT: tl.constexpr):
        """A tile of the window composed in threads, first half: each thread composes its 8 steps' 4 x 4 maps one
        after another and the BT / 8 group maps go through tl.associative_scan; returns the 20 components [BC, BT / 8]
        of the maps from the tile's incoming window to the window after each group (the last group's: the tile's
        map), from which `_m4_tile_states` gives the windows."""
        G: tl.constexpr = BT // 8
        p0, p1, p2, p3, p4, p5, p6, p7 = _split_steps(a1, BC, G)
        q0, q1, q2, q3, q4, q5, q6, q7 = _split_steps(a2, BC, G)
        r0, r1, r2, r3, r4, r5, r6, r7 = _split_steps(a3, BC, G)
        o0, o1, o2, o3, o4, o5, o6, o7 = _split_steps(a4, BC, G)
        u0, u1, u2, u3, u4, u5, u6, u7 = _split_steps(u, BC, G)
        k0, k1, k2, k3, k4, k5, k6, k7 = _split_steps(keep, BC, G)
        maps = _companion4_step(*_identity4(BC, G), p0, q0, r0, o0, u0, k0)
        maps = _companion4_step(*maps, p1, q1, r1, o1, u1, k1)
        maps = _companion4_step(*maps, p2, q2, r2, o2, u2, k2)
        maps = _companion4_step(*maps, p3, q3, r3, o3, u3, k3)
        maps = _companion4_step(*maps, p4, q4, r4, o4, u4, k4)
        maps = _companion4_step(*maps, p5, q5, r5, o5, u5, k5)
        maps = _companion4_step(*maps, p6, q6, r6, o6, u6, k6)
        maps = _companion4_step(*maps, p7, q7, r7, o7, u7, k7)
        return tl.associative_scan(maps, 1, _companion4_combine)

    @triton.jit
    def _m4_tile_states(a1, a2, a3, a4, u, keep, maps, w0, w1, w2, w3, BC: tl.constexpr, BT: tl.constexpr):
        """The windows (s_t, s_{t-1}, s_{t-2}, s_{t-3}) [BC, BT] x 4 of a tile from its incoming window (w0..w3)
        [BC] and the group maps of `_m4_tile_maps`, and the window after its last group: each group's start window is
        the end window of the group before (tl.gather), and its 8 windows follow from it at 4 multiply-adds each.
        a1..a4 are 0 at a document start (keep 0); steps past T must have a1 = 1, a2 = a3 = a4 = 0, keep = 1 (the
        caller takes the final window at step T - 1)."""
        G: tl.constexpr = BT // 8
        p0, p1, p2, p3, p4, p5, p6, p7 = _split_steps(a1, BC, G)
        q0, q1, q2, q3, q4, q5, q6, q7 = _split_steps(a2, BC, G)
        r0, r1, r2, r3, r4, r5, r6, r7 = _split_steps(a3, BC, G)
        o0, o1, o2, o3, o4, o5, o6, o7 = _split_steps(a4, BC, G)
        u0, u1, u2, u3, u4, u5, u6, u7 = _split_steps(u, BC, G)
        k0, k1, k2, k3, k4, k5, k6, k7 = _split_steps(keep, BC, G)
        (m00, m01, m02, m03, m10, m11, m12, m13, m20, m21, m22, m23, m30, m31, m32, m33, b0, b1, b2, b3) = maps
        end0 = _apply4(m00, m01, m02, m03, b0, w0, w1, w2, w3)  # the window after each group
        end1 = _apply4(m10, m11, m12, m13, b1, w0, w1, w2, w3)
        end2 = _apply4(m20, m21, m22, m23, b2, w0, w1, w2, w3)
        end3 = _apply4(m30, m31, m32, m33, b3, w0, w1, w2, w3)
        group = tl.broadcast_to(tl.arange(0, G)[None, :], [BC, G])
        before = tl.maximum(group - 1, 0)
        v0 = tl.where(group == 0, w0[:, None], tl.gather(end0, before, 1))  # the window before each group
        v1 = tl.where(group == 0, w1[:, None], tl.gather(end1, before, 1))
        v2 = tl.where(group == 0, w2[:, None], tl.gather(end2, before, 1))
        v3 = tl.where(group == 0, w3[:, None], tl.gather(end3, before, 1))
        x00, x01, x02, x03 = _m4_state_step(v0, v1, v2, v3, p0, q0, r0, o0, u0, k0)
        x10, x11, x12, x13 = _m4_state_step(x00, x01, x02, x03, p1, q1, r1, o1, u1, k1)
        x20, x21, x22, x23 = _m4_state_step(x10, x11, x12, x13, p2, q2, r2, o2, u2, k2)
        x30, x31, x32, x33 = _m4_state_step(x20, x21, x22, x23, p3, q3, r3, o3, u3, k3)
        x40, x41, x42, x43 = _m4_state_step(x30, x31, x32, x33, p4, q4, r4, o4, u4, k4)
        x50, x51, x52, x53 = _m4_state_step(x40, x41, x42, x43, p5, q5, r5, o5, u5, k5)
        x60, x61, x62, x63 = _m4_state_step(x50, x51, x52, x53, p6, q6, r6, o6, u6, k6)
        x70, x71, x72, x73 = _m4_state_step(x60, x61, x62, x63, p7, q7, r7, o7, u7, k7)
        last = group == G - 1
        return (_join_steps(x00, x10, x20, x30, x40, x50, x60, x70, BC, G),
                _join_steps(x01, x11, x21, x31, x41, x51, x61, x71, BC, G),
                _join_steps(x02, x12, x22, x32, x42, x52, x62, x72, BC, G),
                _join_steps(x03, x13, x23, x33, x43, x53, x63, x73, BC, G),
                tl.sum(tl.where(last, end0, 0.0), axis=1), tl.sum(tl.where(last, end1, 0.0), axis=1),
                tl.sum(tl.where(last, end2, 0.0), axis=1), tl.sum(tl.where(last, end3, 0.0), axis=1))

    # Small grids of order 4 (a few programs per SM: B1 T16384 D1024 has 128) split each row into chunks of one tile,
    # a program each, and join them by a decoupled look-back as scan_triton's first-order kernels do: a chunk publishes
    # its tile's map (M, b) [4 x 4 + 4] (the "aggregate"), composes its predecessors' maps until one has published its
    # true outgoing window or adjoint (the "prefix"), publishes its own prefix (its map applied to that), then scans
    # its tile. Chunk ids come from one atomic counter per (row, channel block), so a predecessor has always started
    # (no deadlock).

    @triton.jit
    def _column4(x, i: tl.constexpr):
        """[BC]: column i of x [BC, 4]."""
        return tl.sum(tl.where((tl.arange(0, 4) == i)[None, :], x, 0.0), axis=1)

    @triton.jit
    def _look_back4(flags, aggregates, prefixes, chunk, num_chunks, stream, streams, map_rows_per_chunk, rows, mc,
                    STEP: tl.constexpr, BC: tl.constexpr):
        """[BC, 4]: the true carry entering `chunk` (the window before it, or with STEP = 1 the adjoint after it):
        compose the published maps of chunk + STEP, chunk + 2 STEP, ... until one has published its prefix, spinning
        while a chunk has published nothing yet."""
        k = tl.arange(0, 4)
        acc_m = tl.broadcast_to(tl.where(k[:, None] == k[None, :], 1.0, 0.0)[None, :, :], [BC, 4, 4])
        acc_b = tl.zeros([BC, 4], tl.float32)
        carry = tl.zeros([BC, 4], tl.float32)
        j = chunk + STEP
        searching = (j >= 0) & (j < num_chunks)
        while searching:
            flag_index = j * streams + stream
            flag = tl.atomic_add(flags + flag_index, 0, sem="acquire", scope="gpu")
            while flag == 0:
                flag = tl.atomic_add(flags + flag_index, 0, sem="acquire", scope="gpu")
            index = j.to(tl.int64) * map_rows_per_chunk + rows  # [BC]
            if flag == _FLAG_PREFIX:
                prefix = tl.load(prefixes + 4 * index[:, None] + k[None, :], mask=mc[:, None], other=0.0,
                                 volatile=True)
                carry = tl.sum(acc_m * prefix[:, None, :], axis=2) + acc_b
            else:  # acc after this chunk's map: x -> acc_m (map_m x + map_b) + acc_b
                map_m = tl.load(aggregates + 20 * index[:, None, None] + (4 * k[:, None] + k[None, :])[None, :, :],
                                mask=mc[:, None, None], other=0.0, volatile=True)
                map_b = tl.load(aggregates + 20 * index[:, None] + 16 + k[None, :], mask=mc[:, None], other=0.0,
                                volatile=True)
                acc_b = tl.sum(acc_m * map_b[:, None, :], axis=2) + acc_b
                acc_m = tl.sum(acc_m[:, :, :, None] * map_m[:, None, :, :], axis=2)
            j += STEP
            searching = (flag != _FLAG_PREFIX) & (j >= 0) & (j < num_chunks)
        return carry

    @triton.jit
    def _group_map(maps, group):
        """The map of column `group` of the scanned group maps (20 x [BC, G]): 20 x [BC]."""
        g = tl.arange(0, maps[0].shape[1])
        return (_pick(maps[0], g, group), _pick(maps[1], g, group), _pick(maps[2], g, group), _pick(maps[3], g, group),
                _pick(maps[4], g, group), _pick(maps[5], g, group), _pick(maps[6], g, group), _pick(maps[7], g, group),
                _pick(maps[8], g, group), _pick(maps[9], g, group), _pick(maps[10], g, group),
                _pick(maps[11], g, group), _pick(maps[12], g, group), _pick(maps[13], g, group),
                _pick(maps[14], g, group), _pick(maps[15], g, group), _pick(maps[16], g, group),
                _pick(maps[17], g, group), _pick(maps[18], g, group), _pick(maps[19], g, group))

    @triton.jit
    def _apply_map4(h0, h1, h2, h3, m):
        """(h0, h1, h2, h3) -> A h + b for the map m (20 components, A row-major then b; any one shape)."""
        return (m[0] * h0 + m[1] * h1 + m[2] * h2 + m[3] * h3 + m[16],
                m[4] * h0 + m[5] * h1 + m[6] * h2 + m[7] * h3 + m[17],
                m[8] * h0 + m[9] * h1 + m[10] * h2 + m[11] * h3 + m[18],
                m[12] * h0 + m[13] * h1 + m[14] * h2 + m[15] * h3 + m[19])

    @triton.jit
    def _chunk_carry4(flags, aggregates, prefixes, chunk_map, chunk, num_chunks, stream, streams, map_rows_per_chunk,
                      rows, mc, c0, c1, c2, c3, PREFIX_EVERY: tl.constexpr, STEP: tl.constexpr, BC: tl.constexpr):
        """The carry (c0..c3) [BC] entering this chunk: given (the initial window, or zero adjoint) where no chunk
        precedes it in the scan's direction; otherwise publish the chunk's map (20 x [BC]) and look back. Then
        publish the chunk's outgoing carry, its map applied to that (tests: only every PREFIX_EVERY-th chunk's and
        the last's, so that look-backs compose maps; the backward's first chunk publishes no map)."""
        neighbour = chunk + STEP
        index = chunk.to(tl.int64) * map_rows_per_chunk + rows
        if (neighbour >= 0) & (neighbour < num_chunks):
            for i in tl.static_range(20):
                tl.store(aggregates + 20 * index + i, chunk_map[i], mask=mc)
            tl.debug_barrier()  # every thread's stores are done before one thread raises the flag
            tl.atomic_xchg(flags + chunk * streams + stream, _FLAG_AGGREGATE, sem="release", scope="gpu")
            carry = _look_back4(flags, aggregates, prefixes, chunk, num_chunks, stream, streams, map_rows_per_chunk,
                                rows, mc, STEP, BC)
            c0, c1, c2, c3 = _column4(carry, 0), _column4(carry, 1), _column4(carry, 2), _column4(carry, 3)
        if (chunk % PREFIX_EVERY == 0) | (chunk == num_chunks - 1):
            x0, x1, x2, x3 = _apply_map4(c0, c1, c2, c3, chunk_map)
            tl.store(prefixes + 4 * index, x0, mask=mc)
            tl.store(prefixes + 4 * index + 1, x1, mask=mc)
            tl.store(prefixes + 4 * index + 2, x2, mask=mc)
            tl.store(prefixes + 4 * index + 3, x3, mask=mc)
            tl.debug_barrier()
            tl.atomic_xchg(flags + chunk * streams + stream, _FLAG_PREFIX, sem="release", scope="gpu")
        return c0, c1, c2, c3

    @triton.jit
    def _chunk_of_row(counters, T, N, B, num_chunks, BC: tl.constexpr, BT: tl.constexpr, CHUNKED: tl.constexpr,
                      REVERSE: tl.constexpr):
        """(b, rows, mc, stream, streams, chunk, first step, end step) of this program: CHUNKED, one tile of a
        (row, channel block) stream, its chunk id from the stream's counter (REVERSE: the last chunk first);
        otherwise the whole row."""
        if CHUNKED:
            streams = B * tl.cdiv(N, BC)
            stream, chunk, _ = _take_chunk(counters, streams, 1, num_chunks, REVERSE=REVERSE, COUNTERS_FROM=0)
            b, rows, mc = _block_offsets(stream, N, BC)
            first = chunk * BT
            end = tl.minimum(first + BT, T)
        else:
            b, rows, mc = _tile_offsets(T, N, BC)
            stream = tl.program_id(0)
            streams = tl.num_programs(0)
            chunk = stream * 0
            first = 0
            end = T
        return b, rows, mc, stream, streams, chunk, first, end

    @triton.jit
    def _m4_tile_inputs(gates, values, starts, rows, b, steps, mask, T, bias1, bias2, bias3, bias4, bias_gate,
                        ACT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_STARTS: tl.constexpr, BC: tl.constexpr,
                        BT: tl.constexpr):
        """(a1, a2, a3, a4, u = g v, keep) [BC, BT] of a tile (at steps [1 or BC, BT]) as `_m4_tile_maps` takes them:
        the coefficients 0 and keep 0 at a document start; the identity step past T."""
        z1, z2, z3, z4, zg = _load_five_at(gates, rows, steps, mask, T, bias1, bias2, bias3, bias4, bias_gate,
                                           HAS_BIAS)
        x = _load_values_at(values, rows, steps, mask, T)
        a1, a2, a3, a4, g = _normalize_five(z1, z2, z3, z4, zg, ACT)
        start = tl.broadcast_to(_starts_in(starts, b, steps, T, HAS_STARTS), [BC, BT])
        inside = mask & ~start
        return (tl.where(mask, tl.where(start, 0.0, a1), 1.0), tl.where(inside, a2, 0.0), tl.where(inside, a3, 0.0),
                tl.where(inside, a4, 0.0), tl.where(mask, g * x, 0.0), tl.where(start, 0.0, 1.0))

    @triton.heuristics({"EVEN": _even_m4_forward})
    @triton.jit
    def _time_last_m4_fwd_kernel(gates, gate_bias, values, initial_state, starts, states, final_state, flags,
                                 counters, aggregates, prefixes, T, N, B, num_chunks, ACT: tl.constexpr,
                                 BC: tl.constexpr, BT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_H0: tl.constexpr,
                                 WRITE_FINAL: tl.constexpr, HAS_STARTS: tl.constexpr, WINDOW: tl.constexpr,
                                 CHUNKED: tl.constexpr, PREFIX_EVERY: tl.constexpr, STAGES: tl.constexpr,
                                 SEGMENTS: tl.constexpr, EVEN: tl.constexpr):
        """states[row, t] = a1 s_{t-1} + ... + a4 s_{t-4} + g v for BC rows, composed in threads
        (`_m4_tile_maps`, `_m4_tile_states`); initial / final window (s, s_{-1}, s_{-2}, s_{-3}). WINDOW: states is
        [B, N, 4, T], the window (s_t, ..., s_{t-3}) at every step (entries before a document's start 0). CHUNKED:
        one tile per program, joined by the look-back (flags, counters, aggregates, prefixes; else None). SEGMENTS
        (one channel a program, whole rows): a tile is SEGMENTS runs of BT steps, a warp each, joined across the
        warps (`_segment_carries4`). STAGES as at m = 1."""
        tl.static_assert(SEGMENTS == 1 or (BC == 1 and not CHUNKED), "segments: one channel a program, whole rows")
        R: tl.constexpr = BC * SEGMENTS  # a tile's rows: BC channels, or one channel's SEGMENTS runs
        SPAN: tl.constexpr = BT * SEGMENTS  # a tile's steps
        b, rows, mc, stream, streams, chunk, first, end = _chunk_of_row(counters, T, N, B, num_chunks, BC, BT, CHUNKED,
                                                                        REVERSE=False)
        bias1 = _load_bias(gate_bias, rows, b, N, 0, 5, mc, HAS_BIAS)
        bias2 = _load_bias(gate_bias, rows, b, N, 1, 5, mc, HAS_BIAS)
        bias3 = _load_bias(gate_bias, rows, b, N, 2, 5, mc, HAS_BIAS)
        bias4 = _load_bias(gate_bias, rows, b, N, 3, 5, mc, HAS_BIAS)
        bias_gate = _load_bias(gate_bias, rows, b, N, 4, 5, mc, HAS_BIAS)
        h0, h1, h2, h3 = _load_four(initial_state, rows, mc, HAS_H0)  # the window before the tile: s_{t-1}, ..., s_{t-4}
        zero = tl.zeros([R], dtype=tl.float32)  # (with segments: the tile's window in every run's entry)
        w0, w1, w2, w3 = zero + h0, zero + h1, zero + h2, zero + h3
        final0, final1, final2, final3 = w0, w1, w2, w3  # overwritten by the last tile
        lane = (tl.arange(0, SEGMENTS) * BT)[:, None] + tl.arange(0, BT)[None, :]  # [SEGMENTS, BT]: steps in a tile
        for t0 in tl.range(first, end, SPAN, num_stages=STAGES):
            steps = t0 + lane
            mask = _in_bounds(mc, steps, T, EVEN)
            a1, a2, a3, a4, u, keep = _m4_tile_inputs(gates, values, starts, rows, b, steps, mask, T, bias1, bias2,
                                                      bias3, bias4, bias_gate, ACT, HAS_BIAS, HAS_STARTS, R, BT)
            maps = _m4_tile_maps(a1, a2, a3, a4, u, keep, R, BT)
            if CHUNKED:  # the window before this chunk, from the chunks before it
                w0, w1, w2, w3 = _chunk_carry4(flags, aggregates, prefixes, _group_map(maps, BT // 8 - 1), chunk,
                                               num_chunks, stream, streams, B * N, rows, mc, w0, w1, w2, w3,
                                               PREFIX_EVERY, STEP=-1, BC=BC)
            if SEGMENTS > 1:  # each run's incoming window from the tile's, and the tile's outgoing one
                w0, w1, w2, w3, n0, n1, n2, n3 = _segment_carries4(maps, w0, w1, w2, w3, REVERSE=False)
            e0, e1, e2, e3, o0, o1, o2, o3 = _m4_tile_states(a1, a2, a3, a4, u, keep, maps, w0, w1, w2, w3, R, BT)
            if SEGMENTS > 1:
                w0, w1, w2, w3 = n0, n1, n2, n3
            else:
                w0, w1, w2, w3 = o0, o1, o2, o3
            if t0 + SPAN >= T:  # the last tile: the final window is the window at step T - 1 (one run holds it)
                final0, final1 = _pick_at(e0, steps, T - 1), _pick_at(e1, steps, T - 1)
                final2, final3 = _pick_at(e2, steps, T - 1), _pick_at(e3, steps, T - 1)
            if WINDOW:
                window_rows = (4 * rows)[:, None] * T + steps
                tl.store(states + window_rows, e0.to(states.dtype.element_ty), mask=mask)
                tl.store(states + window_rows + T, e1.to(states.dtype.element_ty), mask=mask)
                tl.store(states + window_rows + 2 * T, e2.to(states.dtype.element_ty), mask=mask)
                tl.store(states + window_rows + 3 * T, e3.to(states.dtype.element_ty), mask=mask)
            else:
                tl.store(states + rows[:, None] * T + steps, e0.to(states.dtype.element_ty), mask=mask)
        if WRITE_FINAL:
            if SEGMENTS > 1:  # the run that held step T - 1
                final0, final1 = tl.sum(final0, axis=0), tl.sum(final1, axis=0)
                final2, final3 = tl.sum(final2, axis=0), tl.sum(final3, axis=0)
            if end >= T:  # the row's last tile
                _store_four(final_state, rows, mc, final0, final1, final2, final3)

    @triton.jit
    def _adjoint4_step(p00, p01, p02, p03, p10, p11, p12, p13, p20, p21, p22, p23, p30, p31, p32, p33,
                       q0, q1, q2, q3, a1, a2, a3, a4, keep, d):
        """One step back after (P, q): v_t = keep_{t+1} A_{t+1} v_{t+1} + (d_t, 0, 0, 0) on v = (lam, mu1, mu2,
        mu3), A = [[a1, 1, 0, 0], [a2, 0, 1, 0], [a3, 0, 0, 1], [a4, 0, 0, 0]] with the logits of step t + 1 (a1..a4
        already 0 where keep is): the observer form of lam_t = d_t + sum_k a_k,t+k lam_t+k, whose maps need one step
        ahead only; a document start at t + 1 cuts every flow from t + 1 on back to t."""
        return (a1 * p00 + keep * p10, a1 * p01 + keep * p11, a1 * p02 + keep * p12, a1 * p03 + keep * p13,
                a2 * p00 + keep * p20, a2 * p01 + keep * p21, a2 * p02 + keep * p22, a2 * p03 + keep * p23,
                a3 * p00 + keep * p30, a3 * p01 + keep * p31, a3 * p02 + keep * p32, a3 * p03 + keep * p33,
                a4 * p00, a4 * p01, a4 * p02, a4 * p03,
                a1 * q0 + keep * q1 + d, a2 * q0 + keep * q2, a3 * q0 + keep * q3, a4 * q0)

    @triton.jit
    def _m4_adjoint_state_step(v0, v1, v2, v3, a1, a2, a3, a4, keep, d):
        """One step back of v = (lam, mu1, mu2, mu3) in a thread (`_adjoint4_step` on the vector)."""
        return a1 * v0 + keep * v1 + d, a2 * v0 + keep * v2, a3 * v0 + keep * v3, a4 * v0

    @triton.jit
    def _m4_adjoint_tile_maps(a1, a2, a3, a4, keep, dy, BC: tl.constexpr, BT: tl.constexpr):
        """The backward's `_m4_tile_maps`, in reverse time on v = (lam, mu1, mu2, mu3): the 20 components
        [BC, BT / 8] of the maps from v after the tile's last step to v at each group's first step (the first
        group's: the tile's map). a1..a4 = a_{t+1} and keep_{t+1} as the maps use them (0 past T, where the carry
        into the last tile is 0 and stays 0)."""
        G: tl.constexpr = BT // 8
        p0, p1, p2, p3, p4, p5, p6, p7 = _split_steps(a1, BC, G)
        q0, q1, q2, q3, q4, q5, q6, q7 = _split_steps(a2, BC, G)
        r0, r1, r2, r3, r4, r5, r6, r7 = _split_steps(a3, BC, G)
        o0, o1, o2, o3, o4, o5, o6, o7 = _split_steps(a4, BC, G)
        k0, k1, k2, k3, k4, k5, k6, k7 = _split_steps(keep, BC, G)
        d0, d1, d2, d3, d4, d5, d6, d7 = _split_steps(dy, BC, G)
        maps = _adjoint4_step(*_identity4(BC, G), p7, q7, r7, o7, k7, d7)
        maps = _adjoint4_step(*maps, p6, q6, r6, o6, k6, d6)
        maps = _adjoint4_step(*maps, p5, q5, r5, o5, k5, d5)
        maps = _adjoint4_step(*maps, p4, q4, r4, o4, k4, d4)
        maps = _adjoint4_step(*maps, p3, q3, r3, o3, k3, d3)
        maps = _adjoint4_step(*maps, p2, q2, r2, o2, k2, d2)
        maps = _adjoint4_step(*maps, p1, q1, r1, o1, k1, d1)
        maps = _adjoint4_step(*maps, p0, q0, r0, o0, k0, d0)
        return tl.associative_scan(maps, 1, _companion4_combine, reverse=True)

    @triton.jit
    def _m4_adjoint_tile_states(a1, a2, a3, a4, keep, dy, maps, c0, c1, c2, c3, BC: tl.constexpr, BT: tl.constexpr):
        """The backward's `_m4_tile_states`: lam [BC, BT] of a tile from v = (lam, mu1, mu2, mu3) after its last
        step (c0..c3) [BC] and the maps of `_m4_adjoint_tile_maps`, and v at its first step."""
        G: tl.constexpr = BT // 8
        p0, p1, p2, p3, p4, p5, p6, p7 = _split_steps(a1, BC, G)
        q0, q1, q2, q3, q4, q5, q6, q7 = _split_steps(a2, BC, G)
        r0, r1, r2, r3, r4, r5, r6, r7 = _split_steps(a3, BC, G)
        o0, o1, o2, o3, o4, o5, o6, o7 = _split_steps(a4, BC, G)
        k0, k1, k2, k3, k4, k5, k6, k7 = _split_steps(keep, BC, G)
        d0, d1, d2, d3, d4, d5, d6, d7 = _split_steps(dy, BC, G)
        (m00, m01, m02, m03, m10, m11, m12, m13, m20, m21, m22, m23, m30, m31, m32, m33, b0, b1, b2, b3) = maps
        first0 = _apply4(m00, m01, m02, m03, b0, c0, c1, c2, c3)  # v at each group's first step
        first1 = _apply4(m10, m11, m12, m13, b1, c0, c1, c2, c3)
        first2 = _apply4(m20, m21, m22, m23, b2, c0, c1, c2, c3)
        first3 = _apply4(m30, m31, m32, m33, b3, c0, c1, c2, c3)
        group = tl.broadcast_to(tl.arange(0, G)[None, :], [BC, G])
        after = tl.minimum(group + 1, G - 1)
        v0 = tl.where(group == G - 1, c0[:, None], tl.gather(first0, after, 1))  # v after each group
        v1 = tl.where(group == G - 1, c1[:, None], tl.gather(first1, after, 1))
        v2 = tl.where(group == G - 1, c2[:, None], tl.gather(first2, after, 1))
        v3 = tl.where(group == G - 1, c3[:, None], tl.gather(first3, after, 1))
        v0, v1, v2, v3 = _m4_adjoint_state_step(v0, v1, v2, v3, p7, q7, r7, o7, k7, d7)
        l7 = v0
        v0, v1, v2, v3 = _m4_adjoint_state_step(v0, v1, v2, v3, p6, q6, r6, o6, k6, d6)
        l6 = v0
        v0, v1, v2, v3 = _m4_adjoint_state_step(v0, v1, v2, v3, p5, q5, r5, o5, k5, d5)
        l5 = v0
        v0, v1, v2, v3 = _m4_adjoint_state_step(v0, v1, v2, v3, p4, q4, r4, o4, k4, d4)
        l4 = v0
        v0, v1, v2, v3 = _m4_adjoint_state_step(v0, v1, v2, v3, p3, q3, r3, o3, k3, d3)
        l3 = v0
        v0, v1, v2, v3 = _m4_adjoint_state_step(v0, v1, v2, v3, p2, q2, r2, o2, k2, d2)
        l2 = v0
        v0, v1, v2, v3 = _m4_adjoint_state_step(v0, v1, v2, v3, p1, q1, r1, o1, k1, d1)
        l1 = v0
        v0, v1, v2, v3 = _m4_adjoint_state_step(v0, v1, v2, v3, p0, q0, r0, o0, k0, d0)
        head = group == 0
        return (_join_steps(v0, l1, l2, l3, l4, l5, l6, l7, BC, G),
                tl.sum(tl.where(head, v0, 0.0), axis=1), tl.sum(tl.where(head, v1, 0.0), axis=1),
                tl.sum(tl.where(head, v2, 0.0), axis=1), tl.sum(tl.where(head, v3, 0.0), axis=1))

    @triton.jit
    def _m4_adjoint_inputs(gates, d_states, starts, rows, state_rows, b, t, mc, T, bias1, bias2, bias3, bias4,
                           bias_gate, df0, df1, df2, df3, ACT: tl.constexpr, HAS_BIAS: tl.constexpr,
                           HAS_STARTS: tl.constexpr, WINDOW: tl.constexpr, BC: tl.constexpr, BT: tl.constexpr):
        """(a1, a2, a3, a4 of step t + 1, keep_{t+1}, dy) [BC, BT] of a tile as `_m4_adjoint_tile_maps` takes them:
        a_{t+1} 0 past T and where a document starts at t + 1; dy the gradient reaching s_t from the states (with
        WINDOW every window entry that holds it) and from the final window (d_final's entries df0..df3 [BC])."""
        mask = mc[:, None] & (t < T)[None, :]
        mask1 = mc[:, None] & (t + 1 < T)[None, :]
        y1, y2, y3, y4, yg = _load_five(gates, rows, t + 1, mask1, T, bias1, bias2, bias3, bias4, bias_gate, HAS_BIAS)
        n1, n2, n3, n4, _ = _normalize_five(y1, y2, y3, y4, yg, ACT)  # a_{t+1}
        # entry k of the window at step t + k is s_t unless a document starts at t + 1, ..., t + k
        valid1 = ~_starts_at(starts, b, t + 1, T, HAS_STARTS)
        valid2 = valid1 & ~_starts_at(starts, b, t + 2, T, HAS_STARTS)
        valid3 = valid2 & ~_starts_at(starts, b, t + 3, T, HAS_STARTS)
        keep_next = mask1 & valid1
        dy = _load_values(d_states, state_rows, t, mask, T)
        if WINDOW:
            dy += tl.where(valid1, _load_values(d_states, state_rows + 1, t + 1, mask1, T), 0.0)
            dy += tl.where(valid2, _load_values(d_states, state_rows + 2, t + 2, mc[:, None] & (t + 2 < T)[None, :],
                                                T), 0.0)
            dy += tl.where(valid3, _load_values(d_states, state_rows + 3, t + 3, mc[:, None] & (t + 3 < T)[None, :],
                                                T), 0.0)
        # the final window (s_{T-1}, ..., s_{T-4}), likewise
        dy += tl.where((t == T - 1)[None, :], df0[:, None], 0.0)
        dy += tl.where((t == T - 2)[None, :] & valid1, df1[:, None], 0.0)
        dy += tl.where((t == T - 3)[None, :] & valid2, df2[:, None], 0.0)
        dy += tl.where((t == T - 4)[None, :] & valid3, df3[:, None], 0.0)
        # keep is 1 past T too (the adjoint is 0 there, as a1..a4 are): without starts it is then the constant 1,
        # whose 20 multiplies a step the compiler can drop
        return (tl.where(keep_next, n1, 0.0), tl.where(keep_next, n2, 0.0), tl.where(keep_next, n3, 0.0),
                tl.where(keep_next, n4, 0.0), tl.broadcast_to(tl.where(valid1, 1.0, 0.0), [BC, BT]),
                tl.where(mask, dy, 0.0))

    @triton.jit
    def _time_last_m4_bwd_kernel(gates, gate_bias, values, states, initial_state, starts, d_states, d_final, d_gates,
                                 d_values, d_initial_state, d_bias_rows, flags, counters, aggregates, prefixes, T, N, B,
                                 num_chunks, ACT: tl.constexpr, BC: tl.constexpr, BT: tl.constexpr,
                                 HAS_BIAS: tl.constexpr, HAS_H0: tl.constexpr, HAS_D_FINAL: tl.constexpr,
                                 HAS_STARTS: tl.constexpr, WINDOW: tl.constexpr, CHUNKED: tl.constexpr,
                                 PREFIX_EVERY: tl.constexpr):
        """The adjoint lam_t = dy_t + sum_k a_k,t+k lam_t+k in reverse time, composed in threads on v = (lam, mu1, mu2,
        mu3) (`_m4_adjoint_tile_maps`, `_m4_adjoint_tile_states`), then the logit and value gradients. The window
        before step t (s_{t-1}, ..., s_{t-4}), which the logits' gradients need, is read from the saved states (the
        initial window before step 0, zero across a document start). WINDOW: states and d_states are [B, N, 4, T]
        windows; the gradient of entry k at step t + k joins s_t's unless a document starts in between; the final
        window's likewise; what reaches before step 0 goes to the initial window. CHUNKED: one tile per program, the
        last first, joined by the look-back; each chunk's bias gradient sums go to its own [B, N, 5] of d_bias_rows."""
        b, rows, mc, stream, streams, chunk, first, end = _chunk_of_row(counters, T, N, B, num_chunks, BC, BT, CHUNKED,
                                                                        REVERSE=True)
        if CHUNKED & HAS_BIAS:
            d_bias_rows += chunk.to(tl.int64) * B * N * 5
        state_rows = rows  # s_t's row in states and d_states
        if WINDOW:
            state_rows = 4 * rows
        bias1 = _load_bias(gate_bias, rows, b, N, 0, 5, mc, HAS_BIAS)
        bias2 = _load_bias(gate_bias, rows, b, N, 1, 5, mc, HAS_BIAS)
        bias3 = _load_bias(gate_bias, rows, b, N, 2, 5, mc, HAS_BIAS)
        bias4 = _load_bias(gate_bias, rows, b, N, 3, 5, mc, HAS_BIAS)
        bias_gate = _load_bias(gate_bias, rows, b, N, 4, 5, mc, HAS_BIAS)
        d_bias1 = tl.zeros([BC], dtype=tl.float32)  # HAS_BIAS: the logit gradients summed over the steps
        d_bias2 = tl.zeros([BC], dtype=tl.float32)
        d_bias3 = tl.zeros([BC], dtype=tl.float32)
        d_bias4 = tl.zeros([BC], dtype=tl.float32)
        d_bias_gate = tl.zeros([BC], dtype=tl.float32)
        c0 = tl.zeros([BC], dtype=tl.float32)  # v = (lam, mu1, mu2, mu3) at the step after the tile
        c1 = tl.zeros([BC], dtype=tl.float32)
        c2 = tl.zeros([BC], dtype=tl.float32)
        c3 = tl.zeros([BC], dtype=tl.float32)
        h0, h1, h2, h3 = _load_four(initial_state, rows, mc, HAS_H0)  # the initial window s_{-1}, ..., s_{-4}
        df0, df1, df2, df3 = _load_four(d_final, rows, mc, HAS_D_FINAL)
        num_tiles = tl.cdiv(T, BT)
        for r in range(num_tiles - tl.cdiv(end, BT), num_tiles - first // BT):  # the tiles from end back to first
            t0 = (num_tiles - 1 - r) * BT
            t = t0 + tl.arange(0, BT)
            mask = mc[:, None] & (t < T)[None, :]
            n1, n2, n3, n4, keep1, dy = _m4_adjoint_inputs(gates, d_states, starts, rows, state_rows, b, t, mc, T,
                                                           bias1, bias2, bias3, bias4, bias_gate, df0, df1, df2, df3,
                                                           ACT, HAS_BIAS, HAS_STARTS, WINDOW, BC, BT)
            maps = _m4_adjoint_tile_maps(n1, n2, n3, n4, keep1, dy, BC, BT)
            if CHUNKED:  # v after this chunk, from the chunks after it
                c0, c1, c2, c3 = _chunk_carry4(flags, aggregates, prefixes, _group_map(maps, 0), chunk, num_chunks,
                                               stream, streams, B * N, rows, mc, c0, c1, c2, c3, PREFIX_EVERY, STEP=1,
                                               BC=BC)
            lam, c0, c1, c2, c3 = _m4_adjoint_tile_states(n1, n2, n3, n4, keep1, dy, maps, c0, c1, c2, c3, BC, BT)
            # the step's own inputs after the scan (fewer registers live across it)
            z1, z2, z3, z4, zg = _load_five(gates, rows, t, mask, T, bias1, bias2, bias3, bias4, bias_gate, HAS_BIAS)
            a1, a2, a3, a4, g = _normalize_five(z1, z2, z3, z4, zg, ACT)
            x = _load_values(values, rows, t, mask, T)
            # the window before step t: s_{t-k} for k = 1..4, the initial window's entry k - 1 - t before step 0
            s1 = _load_values(states, state_rows, t - 1, mask & (t >= 1)[None, :], T)
            s2 = _load_values(states, state_rows, t - 2, mask & (t >= 2)[None, :], T)
            s3 = _load_values(states, state_rows, t - 3, mask & (t >= 3)[None, :], T)
            s4 = _load_values(states, state_rows, t - 4, mask & (t >= 4)[None, :], T)
            tt = t[None, :]
            s1 = tl.where(tt >= 1, s1, h0[:, None])
            s2 = tl.where(tt >= 2, s2, tl.where(tt == 1, h0[:, None], h1[:, None]))
            s3 = tl.where(tt >= 3, s3, tl.where(tt == 2, h0[:, None], tl.where(tt == 1, h1[:, None], h2[:, None])))
            s4 = tl.where(tt >= 4, s4, tl.where(tt == 3, h0[:, None], tl.where(
                tt == 2, h1[:, None], tl.where(tt == 1, h2[:, None], h3[:, None]))))
            # zero across a document start at t, t - 1, t - 2, t - 3
            ok1 = ~_starts_at(starts, b, t, T, HAS_STARTS)
            ok2 = ok1 & ~_starts_at(starts, b, t - 1, T, HAS_STARTS)
            ok3 = ok2 & ~_starts_at(starts, b, t - 2, T, HAS_STARTS)
            ok4 = ok3 & ~_starts_at(starts, b, t - 3, T, HAS_STARTS)
            s1 = tl.where(ok1, s1, 0.0)
            s2 = tl.where(ok2, s2, 0.0)
            s3 = tl.where(ok3, s3, 0.0)
            s4 = tl.where(ok4, s4, 0.0)
            dz1, dz2, dz3, dz4, dzg = _normalize_five_bwd(z1, z2, z3, z4, zg, lam * s1, lam * s2, lam * s3, lam * s4,
                                                          lam * x, ACT)
            gate_rows = (5 * rows)[:, None] * T + t[None, :]
            tl.store(d_gates + gate_rows, dz1.to(d_gates.dtype.element_ty), mask=mask)
            tl.store(d_gates + gate_rows + T, dz2.to(d_gates.dtype.element_ty), mask=mask)
            tl.store(d_gates + gate_rows + 2 * T, dz3.to(d_gates.dtype.element_ty), mask=mask)
            tl.store(d_gates + gate_rows + 3 * T, dz4.to(d_gates.dtype.element_ty), mask=mask)
            tl.store(d_gates + gate_rows + 4 * T, dzg.to(d_gates.dtype.element_ty), mask=mask)
            tl.store(d_values + rows[:, None] * T + t[None, :], (lam * g).to(d_values.dtype.element_ty), mask=mask)
            if HAS_BIAS:
                d_bias1 += tl.sum(tl.where(mask, dz1, 0.0), axis=1)
                d_bias2 += tl.sum(tl.where(mask, dz2, 0.0), axis=1)
                d_bias3 += tl.sum(tl.where(mask, dz3, 0.0), axis=1)
                d_bias4 += tl.sum(tl.where(mask, dz4, 0.0), axis=1)
                d_bias_gate += tl.sum(tl.where(mask, dzg, 0.0), axis=1)
            if HAS_H0:
                if t0 == 0:
                    # one more step back, with step 0's logits: v_{-1} = (d s_{-1}, ..., d s_{-4})
                    keep0 = _pick(tl.where(ok1 & mask, 1.0, 0.0), t, 0)
                    l0, m1, m2, m3 = _m4_adjoint_state_step(
                        c0, c1, c2, c3, keep0 * _pick(a1, t, 0), keep0 * _pick(a2, t, 0), keep0 * _pick(a3, t, 0),
                        keep0 * _pick(a4, t, 0), keep0, 0.0)
                    # entry k of the window at step j < k, and the final window's entries k >= T, are the initial
                    # window's entry k - 1 - j unless a document starts at 0, ..., j
                    if WINDOW:
                        ok = mask & ok3  # no start at t, t - 1, t - 2: at t <= 2, none at 0..t
                        w1 = tl.where(ok, _load_values(d_states, state_rows + 1, t, mask & (t < 1)[None, :], T), 0.0)
                        w2 = tl.where(ok, _load_values(d_states, state_rows + 2, t, mask & (t < 2)[None, :], T), 0.0)
                        w3 = tl.where(ok, _load_values(d_states, state_rows + 3, t, mask & (t < 3)[None, :], T), 0.0)
                        l0 += _pick(w1, t, 0) + _pick(w2, t, 1) + _pick(w3, t, 2)
                        m1 += _pick(w2, t, 0) + _pick(w3, t, 1)
                        m2 += _pick(w3, t, 0)
                    if T < 4:
                        no_start = tl.sum(tl.where(mask & ~ok1, 1.0, 0.0), axis=1) == 0  # none in [0, T)
                        if T == 1:
                            l0 += tl.where(no_start, df1, 0.0)
                            m1 += tl.where(no_start, df2, 0.0)
                            m2 += tl.where(no_start, df3, 0.0)
                        elif T == 2:
                            l0 += tl.where(no_start, df2, 0.0)
                            m1 += tl.where(no_start, df3, 0.0)
                        else:
                            l0 += tl.where(no_start, df3, 0.0)
                    _store_four(d_initial_state, rows, mc, l0, m1, m2, m3)
        if HAS_BIAS:
            _store_bias_gradient(d_bias_rows, rows, 0, 5, mc, d_bias1)
            _store_bias_gradient(d_bias_rows, rows, 1, 5, mc, d_bias2)
            _store_bias_gradient(d_bias_rows, rows, 2, 5, mc, d_bias3)
            _store_bias_gradient(d_bias_rows, rows, 3, 5, mc, d_bias4)
            _store_bias_gradient(d_bias_rows, rows, 4, 5, mc, d_bias_gate)


    # ---- BD-LRU of block size 2: per block, h_t = A_t h_{t-1} + g_t * v_t with A_t = [[a00, a01], [a10, a11]] and
    # each row (a_j0, a_j1, g_j) normalised over its three logits. The step is a general 2 x 2 affine map, as H-LRU
    # m = 2's composed maps are, so it is composed in threads the same way (`_companion_combine`), the block's state
    # (h0, h1) in place of the window. Gates [B, N, 2, 3, T] are rows 3 (2 n + j) + k of [B * N * 6, T]; values and
    # states [B, N, 2, T] rows 2 n + j.

    @triton.jit
    def _bd2_load_normalized(gates, blocks, steps, mask, T, bias, ACT: tl.constexpr, HAS_BIAS: tl.constexpr):
        """(a00, a01, g0, a10, a11, g1) [rows, BT] at steps [1 or rows, BT] of blocks [BC], and the six logits (plus
        their bias, the six [BC] of `bias`): each row of the block's [A | g] normalised over its three logits."""
        b00, b01, b0g, b10, b11, b1g = bias
        z00, z01, z0g = _load_triple_at(gates, 2 * blocks, steps, mask, T, b00, b01, b0g, HAS_BIAS)
        z10, z11, z1g = _load_triple_at(gates, 2 * blocks + 1, steps, mask, T, b10, b11, b1g, HAS_BIAS)
        a00, a01, g0 = _normalize_triple(z00, z01, z0g, ACT)
        a10, a11, g1 = _normalize_triple(z10, z11, z1g, ACT)
        return a00, a01, g0, a10, a11, g1, z00, z01, z0g, z10, z11, z1g

    @triton.jit
    def _bd2_apply(h0, h1, a00, a01, a10, a11, u0, u1):
        """One step of the recurrence: (h0, h1) -> A (h0, h1) + (u0, u1)."""
        return a00 * h0 + a01 * h1 + u0, a10 * h0 + a11 * h1 + u1

    @triton.jit
    def _bd2_tile_maps(a00, a01, a10, a11, u0, u1, BC: tl.constexpr, BT: tl.constexpr, REVERSE: tl.constexpr):
        """x_t = A_t x_{t-1} + u_t over a tile composed in threads, first half (REVERSE: x_t = A_t x_{t+1} + u_t, the
        backward's adjoint, with A_t = A_{t+1}^T given by the caller): each thread composes its 8 consecutive steps'
        maps (A, u) one after another (from the last one back in REVERSE) and only the BT / 8 group maps go through
        tl.associative_scan; returns the 6 components [BC, BT / 8] of the maps from the carry entering the tile to x
        at each group's far edge (its last step, or first in REVERSE), from which `_bd2_tile_states` gives x. Steps
        outside [0, T) must have A = I, u = 0 forward, A = 0, u = 0 in reverse."""
        G: tl.constexpr = BT // 8
        p00_0, p00_1, p00_2, p00_3, p00_4, p00_5, p00_6, p00_7 = _split_steps(a00, BC, G)
        p01_0, p01_1, p01_2, p01_3, p01_4, p01_5, p01_6, p01_7 = _split_steps(a01, BC, G)
        p10_0, p10_1, p10_2, p10_3, p10_4, p10_5, p10_6, p10_7 = _split_steps(a10, BC, G)
        p11_0, p11_1, p11_2, p11_3, p11_4, p11_5, p11_6, p11_7 = _split_steps(a11, BC, G)
        u0_0, u0_1, u0_2, u0_3, u0_4, u0_5, u0_6, u0_7 = _split_steps(u0, BC, G)
        u1_0, u1_1, u1_2, u1_3, u1_4, u1_5, u1_6, u1_7 = _split_steps(u1, BC, G)
        if REVERSE:  # compose from the last step back
            p, q, r, s, b1, b2 = p00_7, p01_7, p10_7, p11_7, u0_7, u1_7
            p, q, r, s, b1, b2 = _companion_combine(p, q, r, s, b1, b2, p00_6, p01_6, p10_6, p11_6, u0_6, u1_6)
            p, q, r, s, b1, b2 = _companion_combine(p, q, r, s, b1, b2, p00_5, p01_5, p10_5, p11_5, u0_5, u1_5)
            p, q, r, s, b1, b2 = _companion_combine(p, q, r, s, b1, b2, p00_4, p01_4, p10_4, p11_4, u0_4, u1_4)
            p, q, r, s, b1, b2 = _companion_combine(p, q, r, s, b1, b2, p00_3, p01_3, p10_3, p11_3, u0_3, u1_3)
            p, q, r, s, b1, b2 = _companion_combine(p, q, r, s, b1, b2, p00_2, p01_2, p10_2, p11_2, u0_2, u1_2)
            p, q, r, s, b1, b2 = _companion_combine(p, q, r, s, b1, b2, p00_1, p01_1, p10_1, p11_1, u0_1, u1_1)
            p, q, r, s, b1, b2 = _companion_combine(p, q, r, s, b1, b2, p00_0, p01_0, p10_0, p11_0, u0_0, u1_0)
        else:
            p, q, r, s, b1, b2 = p00_0, p01_0, p10_0, p11_0, u0_0, u1_0
            p, q, r, s, b1, b2 = _companion_combine(p, q, r, s, b1, b2, p00_1, p01_1, p10_1, p11_1, u0_1, u1_1)
            p, q, r, s, b1, b2 = _companion_combine(p, q, r, s, b1, b2, p00_2, p01_2, p10_2, p11_2, u0_2, u1_2)
            p, q, r, s, b1, b2 = _companion_combine(p, q, r, s, b1, b2, p00_3, p01_3, p10_3, p11_3, u0_3, u1_3)
            p, q, r, s, b1, b2 = _companion_combine(p, q, r, s, b1, b2, p00_4, p01_4, p10_4, p11_4, u0_4, u1_4)
            p, q, r, s, b1, b2 = _companion_combine(p, q, r, s, b1, b2, p00_5, p01_5, p10_5, p11_5, u0_5, u1_5)
            p, q, r, s, b1, b2 = _companion_combine(p, q, r, s, b1, b2, p00_6, p01_6, p10_6, p11_6, u0_6, u1_6)
            p, q, r, s, b1, b2 = _companion_combine(p, q, r, s, b1, b2, p00_7, p01_7, p10_7, p11_7, u0_7, u1_7)
        return tl.associative_scan((p, q, r, s, b1, b2), 1, _companion_combine, reverse=REVERSE)

    @triton.jit
    def _bd2_tile_states(a00, a01, a10, a11, u0, u1, maps, c0, c1, BC: tl.constexpr, BT: tl.constexpr,
                         REVERSE: tl.constexpr):
        """Second half: x (x0, x1) [BC, BT] of a tile from the carry (c0, c1) [BC] (x before the tile's first step, or
        after its last one in REVERSE) and the group maps of `_bd2_tile_maps`, and x at the tile's other end: each
        group's carry is x at the edge of the group before it (tl.gather), and its 8 values follow from it at 4
        multiply-adds each."""
        G: tl.constexpr = BT // 8
        p00_0, p00_1, p00_2, p00_3, p00_4, p00_5, p00_6, p00_7 = _split_steps(a00, BC, G)
        p01_0, p01_1, p01_2, p01_3, p01_4, p01_5, p01_6, p01_7 = _split_steps(a01, BC, G)
        p10_0, p10_1, p10_2, p10_3, p10_4, p10_5, p10_6, p10_7 = _split_steps(a10, BC, G)
        p11_0, p11_1, p11_2, p11_3, p11_4, p11_5, p11_6, p11_7 = _split_steps(a11, BC, G)
        u0_0, u0_1, u0_2, u0_3, u0_4, u0_5, u0_6, u0_7 = _split_steps(u0, BC, G)
        u1_0, u1_1, u1_2, u1_3, u1_4, u1_5, u1_6, u1_7 = _split_steps(u1, BC, G)
        group = tl.broadcast_to(tl.arange(0, G)[None, :], [BC, G])
        if REVERSE:
            neighbour, edge_group, far_group = tl.minimum(group + 1, G - 1), G - 1, 0
        else:
            neighbour, edge_group, far_group = tl.maximum(group - 1, 0), 0, G - 1
        p, q, r, s, b1, b2 = maps
        end0 = p * c0[:, None] + q * c1[:, None] + b1  # x at each group's far edge (its first step in reverse)
        end1 = r * c0[:, None] + s * c1[:, None] + b2
        w0 = tl.where(group == edge_group, c0[:, None], tl.gather(end0, neighbour, 1))  # each group's carry
        w1 = tl.where(group == edge_group, c1[:, None], tl.gather(end1, neighbour, 1))
        if REVERSE:
            x0_7, x1_7 = _bd2_apply(w0, w1, p00_7, p01_7, p10_7, p11_7, u0_7, u1_7)
            x0_6, x1_6 = _bd2_apply(x0_7, x1_7, p00_6, p01_6, p10_6, p11_6, u0_6, u1_6)
            x0_5, x1_5 = _bd2_apply(x0_6, x1_6, p00_5, p01_5, p10_5, p11_5, u0_5, u1_5)
            x0_4, x1_4 = _bd2_apply(x0_5, x1_5, p00_4, p01_4, p10_4, p11_4, u0_4, u1_4)
            x0_3, x1_3 = _bd2_apply(x0_4, x1_4, p00_3, p01_3, p10_3, p11_3, u0_3, u1_3)
            x0_2, x1_2 = _bd2_apply(x0_3, x1_3, p00_2, p01_2, p10_2, p11_2, u0_2, u1_2)
            x0_1, x1_1 = _bd2_apply(x0_2, x1_2, p00_1, p01_1, p10_1, p11_1, u0_1, u1_1)
            x0_0, x1_0 = _bd2_apply(x0_1, x1_1, p00_0, p01_0, p10_0, p11_0, u0_0, u1_0)
        else:
            x0_0, x1_0 = _bd2_apply(w0, w1, p00_0, p01_0, p10_0, p11_0, u0_0, u1_0)
            x0_1, x1_1 = _bd2_apply(x0_0, x1_0, p00_1, p01_1, p10_1, p11_1, u0_1, u1_1)
            x0_2, x1_2 = _bd2_apply(x0_1, x1_1, p00_2, p01_2, p10_2, p11_2, u0_2, u1_2)
            x0_3, x1_3 = _bd2_apply(x0_2, x1_2, p00_3, p01_3, p10_3, p11_3, u0_3, u1_3)
            x0_4, x1_4 = _bd2_apply(x0_3, x1_3, p00_4, p01_4, p10_4, p11_4, u0_4, u1_4)
            x0_5, x1_5 = _bd2_apply(x0_4, x1_4, p00_5, p01_5, p10_5, p11_5, u0_5, u1_5)
            x0_6, x1_6 = _bd2_apply(x0_5, x1_5, p00_6, p01_6, p10_6, p11_6, u0_6, u1_6)
            x0_7, x1_7 = _bd2_apply(x0_6, x1_6, p00_7, p01_7, p10_7, p11_7, u0_7, u1_7)
        x0 = _join_steps(x0_0, x0_1, x0_2, x0_3, x0_4, x0_5, x0_6, x0_7, BC, G)
        x1 = _join_steps(x1_0, x1_1, x1_2, x1_3, x1_4, x1_5, x1_6, x1_7, BC, G)
        far = group == far_group
        return x0, x1, tl.sum(tl.where(far, end0, 0.0), axis=1), tl.sum(tl.where(far, end1, 0.0), axis=1)

    @triton.jit
    def _bd2_tile(a00, a01, a10, a11, u0, u1, c0, c1, BC: tl.constexpr, BT: tl.constexpr, REVERSE: tl.constexpr,
                  IN_THREADS: tl.constexpr, SEGMENTS: tl.constexpr):
        """`_bd2_tile_maps` and `_bd2_tile_states` (IN_THREADS), or the same tile with tl.associative_scan over all
        its steps, one step a lane (the tile scan of TILE's four-warp programs, which hide more latency on a small
        grid). SEGMENTS (in threads; the BC rows one block's consecutive runs): the carry, the same in every entry,
        enters the first run, each other run's comes from the run before (`_segment_carries`), and the carry leaving
        the tile comes back in every entry."""
        if IN_THREADS:
            maps = _bd2_tile_maps(a00, a01, a10, a11, u0, u1, BC, BT, REVERSE)
            if SEGMENTS > 1:
                c0, c1, leaving0, leaving1 = _segment_carries(maps, c0, c1, REVERSE)
            x0, x1, far0, far1 = _bd2_tile_states(a00, a01, a10, a11, u0, u1, maps, c0, c1, BC, BT, REVERSE)
            if SEGMENTS > 1:
                far0, far1 = leaving0, leaving1
        else:
            p, q, r, s, b1, b2 = tl.associative_scan((a00, a01, a10, a11, u0, u1), 1, _companion_combine,
                                                     reverse=REVERSE)
            x0 = p * c0[:, None] + q * c1[:, None] + b1
            x1 = r * c0[:, None] + s * c1[:, None] + b2
            steps = tl.arange(0, BT)
            far0, far1 = _pick(x0, steps, 0 if REVERSE else BT - 1), _pick(x1, steps, 0 if REVERSE else BT - 1)
        return x0, x1, far0, far1

    @triton.jit
    def _bd2_load_bias(gate_bias, blocks, b, N, mc, HAS_BIAS: tl.constexpr):
        """The six logit biases [BC] of blocks' rows (gate_bias[n, j, k] at 3 j + k), zeros without a bias."""
        b00 = _load_bias(gate_bias, blocks, b, N, 0, 6, mc, HAS_BIAS)
        b01 = _load_bias(gate_bias, blocks, b, N, 1, 6, mc, HAS_BIAS)
        b0g = _load_bias(gate_bias, blocks, b, N, 2, 6, mc, HAS_BIAS)
        b10 = _load_bias(gate_bias, blocks, b, N, 3, 6, mc, HAS_BIAS)
        b11 = _load_bias(gate_bias, blocks, b, N, 4, 6, mc, HAS_BIAS)
        b1g = _load_bias(gate_bias, blocks, b, N, 5, 6, mc, HAS_BIAS)
        return b00, b01, b0g, b10, b11, b1g

    @triton.heuristics({"EVEN": _even})
    @triton.jit
    def _bd2_time_last_fwd_kernel(gates, gate_bias, values, initial_state, starts, states, final_state, T, N,
                                  ACT: tl.constexpr, BC: tl.constexpr, BT: tl.constexpr, PREFETCH: tl.constexpr,
                                  STAGES: tl.constexpr, IN_THREADS: tl.constexpr, SEGMENTS: tl.constexpr,
                                  HAS_BIAS: tl.constexpr, HAS_H0: tl.constexpr, WRITE_FINAL: tl.constexpr,
                                  HAS_STARTS: tl.constexpr, EVEN: tl.constexpr):
        """BD-LRU block size 2 for BC blocks: states[block, j, t] = h_t[j]; initial / final state (h0, h1); the state
        restarts from zero before every document start (A_t = 0 there). PREFETCH: each tile's logits and values are
        loaded into registers while the tile before is scanned (large grids; else STAGES as at H-LRU m = 1).
        IN_THREADS: the tile composed 8 steps a thread (`_bd2_tile`). SEGMENTS (in threads, one block a program): a
        tile is SEGMENTS runs of BT steps, a warp each, joined across the warps (`_segment_carries`), as H-LRU m = 2's."""
        tl.static_assert(SEGMENTS == 1 or (IN_THREADS and BC == 1), "segments run in threads, one block a program")
        R: tl.constexpr = BC * SEGMENTS  # a tile's rows: BC blocks, or one block's SEGMENTS runs
        SPAN: tl.constexpr = BT * SEGMENTS  # a tile's steps
        b, blocks, mc = _tile_offsets(T, N, BC)
        bias = _bd2_load_bias(gate_bias, blocks, b, N, mc, HAS_BIAS)
        h0 = tl.zeros([R], dtype=tl.float32)  # (with segments: the tile's, in every entry)
        h1 = tl.zeros([R], dtype=tl.float32)
        if HAS_H0:
            h0 += tl.load(initial_state + 2 * blocks, mask=mc, other=0.0)
            h1 += tl.load(initial_state + 2 * blocks + 1, mask=mc, other=0.0)
        lane = (tl.arange(0, SEGMENTS) * BT)[:, None] + tl.arange(0, BT)[None, :]  # [SEGMENTS, BT]: steps in a tile
        if PREFETCH:
            steps = lane
            mask = _in_bounds(mc, steps, T, EVEN)
            a00, a01, g0, a10, a11, g1, _, _, _, _, _, _ = _bd2_load_normalized(gates, blocks, steps, mask, T, bias,
                                                                                ACT, HAS_BIAS)
            x0 = _load_values_at(values, 2 * blocks, steps, mask, T)
            x1 = _load_values_at(values, 2 * blocks + 1, steps, mask, T)
        for t0 in tl.range(0, T, SPAN, num_stages=STAGES):
            steps = t0 + lane
            mask = _in_bounds(mc, steps, T, EVEN)
            if PREFETCH:
                mask_next = mc[:, None] & (steps + SPAN < T)
                a00_n, a01_n, g0_n, a10_n, a11_n, g1_n, _, _, _, _, _, _ = _bd2_load_normalized(
                    gates, blocks, steps + SPAN, mask_next, T, bias, ACT, HAS_BIAS)
                x0_n = _load_values_at(values, 2 * blocks, steps + SPAN, mask_next, T)
                x1_n = _load_values_at(values, 2 * blocks + 1, steps + SPAN, mask_next, T)
            else:
                a00, a01, g0, a10, a11, g1, _, _, _, _, _, _ = _bd2_load_normalized(gates, blocks, steps, mask, T,
                                                                                    bias, ACT, HAS_BIAS)
                x0 = _load_values_at(values, 2 * blocks, steps, mask, T)
                x1 = _load_values_at(values, 2 * blocks + 1, steps, mask, T)
            inside = mask & ~_starts_in(starts, b, steps, T, HAS_STARTS)  # a document start: A = 0, from a zero state
            c00 = tl.where(mask, tl.where(inside, a00, 0.0), 1.0)  # steps past T: the identity
            c01, c10 = tl.where(inside, a01, 0.0), tl.where(inside, a10, 0.0)
            c11 = tl.where(mask, tl.where(inside, a11, 0.0), 1.0)
            u0, u1 = tl.where(mask, g0 * x0, 0.0), tl.where(mask, g1 * x1, 0.0)
            new0, new1, h0, h1 = _bd2_tile(c00, c01, c10, c11, u0, u1, h0, h1, R, BT, False, IN_THREADS, SEGMENTS)
            tl.store(states + (2 * blocks)[:, None] * T + steps, new0.to(states.dtype.element_ty), mask=mask)
            tl.store(states + (2 * blocks + 1)[:, None] * T + steps, new1.to(states.dtype.element_ty), mask=mask)
            if PREFETCH:
                a00, a01, g0, a10, a11, g1, x0, x1 = a00_n, a01_n, g0_n, a10_n, a11_n, g1_n, x0_n, x1_n
        if WRITE_FINAL:
            tl.store(final_state + 2 * blocks, _first_run(h0, SEGMENTS), mask=mc)
            tl.store(final_state + 2 * blocks + 1, _first_run(h1, SEGMENTS), mask=mc)

    @triton.jit
    def _bd2_time_last_bwd_kernel(gates, gate_bias, values, states, initial_state, starts, d_states, d_final, d_gates,
                                  d_values, d_initial_state, d_bias_rows, T, N, ACT: tl.constexpr, BC: tl.constexpr,
                                  BT: tl.constexpr, IN_THREADS: tl.constexpr, SEGMENTS: tl.constexpr,
                                  STAGES: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_H0: tl.constexpr,
                                  HAS_D_FINAL: tl.constexpr, HAS_STARTS: tl.constexpr):
        """The adjoint lam_t = dy_t + A_{t+1}^T lam_{t+1} (plus the final state's gradient at T - 1; no flow back
        across a document start), scanned in reverse time a tile at a time (`_bd2_tile` with REVERSE; SEGMENTS as
        the forward's, the runs joined in reverse); then, per step, d A_t[j, k] = lam_t[j] h_{t-1}[k], d g_t[j] =
        lam_t[j] v_t[j] through each row's normalisation, d v_t[j] = lam_t[j] g_t[j], and the initial state's
        gradient A_0^T lam_0. h_{t-1} is read from the saved states (the initial state at t = 0; zero at a document
        start). HAS_BIAS: each program also sums its logit gradients over the steps into d_bias_rows [B, N, 6] (the
        host sums the batch rows). STAGES: the tile loop's software pipeline, as the forwards' (BD2_BACKWARD_STAGES)."""
        tl.static_assert(SEGMENTS == 1 or (IN_THREADS and BC == 1), "segments run in threads, one block a program")
        R: tl.constexpr = BC * SEGMENTS
        SPAN: tl.constexpr = BT * SEGMENTS
        b, blocks, mc = _tile_offsets(T, N, BC)
        bias = _bd2_load_bias(gate_bias, blocks, b, N, mc, HAS_BIAS)
        G: tl.constexpr = BT // 8
        d_bias00 = tl.zeros([R, G], dtype=tl.float32)  # HAS_BIAS: the logit gradients summed per group of 8 steps
        d_bias01 = tl.zeros([R, G], dtype=tl.float32)
        d_bias0g = tl.zeros([R, G], dtype=tl.float32)
        d_bias10 = tl.zeros([R, G], dtype=tl.float32)
        d_bias11 = tl.zeros([R, G], dtype=tl.float32)
        d_bias1g = tl.zeros([R, G], dtype=tl.float32)
        l0 = tl.zeros([R], dtype=tl.float32)  # lam at the step after the tile (with segments: in every entry)
        l1 = tl.zeros([R], dtype=tl.float32)
        h0 = tl.zeros([BC], dtype=tl.float32)
        h1 = tl.zeros([BC], dtype=tl.float32)
        if HAS_H0:
            h0 = tl.load(initial_state + 2 * blocks, mask=mc, other=0.0)
            h1 = tl.load(initial_state + 2 * blocks + 1, mask=mc, other=0.0)
        df0 = tl.zeros([BC], dtype=tl.float32)
        df1 = tl.zeros([BC], dtype=tl.float32)
        if HAS_D_FINAL:
            df0 = tl.load(d_final + 2 * blocks, mask=mc, other=0.0)
            df1 = tl.load(d_final + 2 * blocks + 1, mask=mc, other=0.0)
        lane = (tl.arange(0, SEGMENTS) * BT)[:, None] + tl.arange(0, BT)[None, :]  # [SEGMENTS, BT]: steps in a tile
        num_tiles = tl.cdiv(T, SPAN)
        for i in tl.range(0, num_tiles, num_stages=STAGES):
            t0 = (num_tiles - 1 - i) * SPAN
            steps = t0 + lane
            mask = mc[:, None] & (steps < T)
            start = _starts_in(starts, b, steps, T, HAS_STARTS)
            coupled = mc[:, None] & (steps + 1 < T) & ~_starts_in(starts, b, steps + 1, T, HAS_STARTS)
            n00, n01, _, n10, n11, _, _, _, _, _, _, _ = _bd2_load_normalized(gates, blocks, steps + 1, coupled, T,
                                                                              bias, ACT, HAS_BIAS)
            dy0 = _load_values_at(d_states, 2 * blocks, steps, mask, T) + tl.where(steps == T - 1, df0[:, None], 0.0)
            dy1 = _load_values_at(d_states, 2 * blocks + 1, steps, mask, T) + tl.where(steps == T - 1, df1[:, None],
                                                                                       0.0)
            # C_t = A_{t+1}^T; 0 from T - 1 on and before a start
            c00, c01 = tl.where(coupled, n00, 0.0), tl.where(coupled, n10, 0.0)
            c10, c11 = tl.where(coupled, n01, 0.0), tl.where(coupled, n11, 0.0)
            dy0, dy1 = tl.where(mask, dy0, 0.0), tl.where(mask, dy1, 0.0)
            lam0, lam1, l0, l1 = _bd2_tile(c00, c01, c10, c11, dy0, dy1, l0, l1, R, BT, True, IN_THREADS, SEGMENTS)
            # the step's own inputs after the scan (fewer registers live across it)
            a00, a01, g0, a10, a11, g1, z00, z01, z0g, z10, z11, z1g = _bd2_load_normalized(gates, blocks, steps, mask,
                                                                                            T, bias, ACT, HAS_BIAS)
            x0 = _load_values_at(values, 2 * blocks, steps, mask, T)
            x1 = _load_values_at(values, 2 * blocks + 1, steps, mask, T)
            before = mask & (steps >= 1)
            s0 = tl.where(steps >= 1, _load_values_at(states, 2 * blocks, steps - 1, before, T), h0[:, None])
            s1 = tl.where(steps >= 1, _load_values_at(states, 2 * blocks + 1, steps - 1, before, T), h1[:, None])
            s0 = tl.where(start, 0.0, s0)  # a document starts from a zero state
            s1 = tl.where(start, 0.0, s1)
            dz00, dz01, dz0g = _normalize_triple_bwd(z00, z01, z0g, lam0 * s0, lam0 * s1, lam0 * x0, ACT)
            dz10, dz11, dz1g = _normalize_triple_bwd(z10, z11, z1g, lam1 * s0, lam1 * s1, lam1 * x1, ACT)
            gate_rows = (6 * blocks)[:, None] * T + steps
            tl.store(d_gates + gate_rows, dz00.to(d_gates.dtype.element_ty), mask=mask)
            tl.store(d_gates + gate_rows + T, dz01.to(d_gates.dtype.element_ty), mask=mask)
            tl.store(d_gates + gate_rows + 2 * T, dz0g.to(d_gates.dtype.element_ty), mask=mask)
            tl.store(d_gates + gate_rows + 3 * T, dz10.to(d_gates.dtype.element_ty), mask=mask)
            tl.store(d_gates + gate_rows + 4 * T, dz11.to(d_gates.dtype.element_ty), mask=mask)
            tl.store(d_gates + gate_rows + 5 * T, dz1g.to(d_gates.dtype.element_ty), mask=mask)
            value_rows = (2 * blocks)[:, None] * T + steps
            tl.store(d_values + value_rows, (lam0 * g0).to(d_values.dtype.element_ty), mask=mask)
            tl.store(d_values + value_rows + T, (lam1 * g1).to(d_values.dtype.element_ty), mask=mask)
            if HAS_BIAS:
                d_bias00 += _step_sums(tl.where(mask, dz00, 0.0), R, G)
                d_bias01 += _step_sums(tl.where(mask, dz01, 0.0), R, G)
                d_bias0g += _step_sums(tl.where(mask, dz0g, 0.0), R, G)
                d_bias10 += _step_sums(tl.where(mask, dz10, 0.0), R, G)
                d_bias11 += _step_sums(tl.where(mask, dz11, 0.0), R, G)
                d_bias1g += _step_sums(tl.where(mask, dz1g, 0.0), R, G)
            if HAS_H0:
                if t0 == 0:  # h_0 = A_0 h_{-1} + ...: d h_{-1} = A_0^T lam_0, lam_0 = (l0, l1) now; 0 after a start
                    keep = tl.where(start, 0.0, 1.0)  # (with segments the first run holds step 0)
                    a00_0, a01_0 = _pick_at(a00 * keep, steps, 0), _pick_at(a01 * keep, steps, 0)
                    a10_0, a11_0 = _pick_at(a10 * keep, steps, 0), _pick_at(a11 * keep, steps, 0)
                    tl.store(d_initial_state + 2 * blocks, _first_run(a00_0 * l0 + a10_0 * l1, SEGMENTS), mask=mc)
                    tl.store(d_initial_state + 2 * blocks + 1, _first_run(a01_0 * l0 + a11_0 * l1, SEGMENTS), mask=mc)
        if HAS_BIAS:
            d_bias00, d_bias01, d_bias0g = tl.sum(d_bias00, axis=1), tl.sum(d_bias01, axis=1), tl.sum(d_bias0g, axis=1)
            d_bias10, d_bias11, d_bias1g = tl.sum(d_bias10, axis=1), tl.sum(d_bias11, axis=1), tl.sum(d_bias1g, axis=1)
            if SEGMENTS > 1:  # the runs' sums
                d_bias00, d_bias01, d_bias0g = tl.sum(d_bias00, axis=0), tl.sum(d_bias01, axis=0), \
                    tl.sum(d_bias0g, axis=0)
                d_bias10, d_bias11, d_bias1g = tl.sum(d_bias10, axis=0), tl.sum(d_bias11, axis=0), \
                    tl.sum(d_bias1g, axis=0)
            _store_bias_gradient(d_bias_rows, blocks, 0, 6, mc, d_bias00)
            _store_bias_gradient(d_bias_rows, blocks, 1, 6, mc, d_bias01)
            _store_bias_gradient(d_bias_rows, blocks, 2, 6, mc, d_bias0g)
            _store_bias_gradient(d_bias_rows, blocks, 3, 6, mc, d_bias10)
            _store_bias_gradient(d_bias_rows, blocks, 4, 6, mc, d_bias11)
            _store_bias_gradient(d_bias_rows, blocks, 5, 6, mc, d_bias1g)

    # ---- BD-LRU of block size 4: per block, h_t = A_t h_{t-1} + g_t * v_t with A_t 4 x 4 and each row (a_j0..a_j3,
    # g_j) normalised over its five logits. The step is a general 4 x 4 affine map, the type H-LRU m = 4's groups
    # compose (`_companion4_combine`), so it is composed in threads the same way, 4 steps a thread: the 20 components
    # of 8 steps held 255 registers (`ptxas -v`), 4 steps 149 (bench_results/probes_2026-12-01/bd4/). Gates
    # [B, N, 4, 5, T] are rows 5 (4 n + j) + k of [B * N * 20, T]; values and states [B, N, 4, T] rows 4 n + j. A map
    # is a tuple of 20 components: A row-major, then the offset.

    @triton.jit
    def _split_steps4(x, BC: tl.constexpr, G: tl.constexpr):
        """[BC, 4 G] -> its 4 columns [BC, G], column k holding steps 4 g + k (each thread's 4 consecutive steps)."""
        x = tl.reshape(x, [BC, G, 2, 2])
        x0, x1 = tl.split(x)  # k = 2 i + j: j first
        c0, c2 = tl.split(x0)
        c1, c3 = tl.split(x1)
        return c0, c1, c2, c3

    @triton.jit
    def _join_steps4(c0, c1, c2, c3, BC: tl.constexpr, G: tl.constexpr):
        """The inverse of `_split_steps4`."""
        return tl.reshape(tl.join(tl.join(c0, c2), tl.join(c1, c3)), [BC, G * 4])

    @triton.jit
    def _bd4_split(maps, BC: tl.constexpr, G: tl.constexpr):
        """A map's 20 components [BC, 4 G] -> 20 tuples of their 4 step columns [BC, G]."""
        return (_split_steps4(maps[0], BC, G), _split_steps4(maps[1], BC, G), _split_steps4(maps[2], BC, G),
                _split_steps4(maps[3], BC, G), _split_steps4(maps[4], BC, G), _split_steps4(maps[5], BC, G),
                _split_steps4(maps[6], BC, G), _split_steps4(maps[7], BC, G), _split_steps4(maps[8], BC, G),
                _split_steps4(maps[9], BC, G), _split_steps4(maps[10], BC, G), _split_steps4(maps[11], BC, G),
                _split_steps4(maps[12], BC, G), _split_steps4(maps[13], BC, G), _split_steps4(maps[14], BC, G),
                _split_steps4(maps[15], BC, G), _split_steps4(maps[16], BC, G), _split_steps4(maps[17], BC, G),
                _split_steps4(maps[18], BC, G), _split_steps4(maps[19], BC, G))

    @triton.jit
    def _bd4_step(s, i: tl.constexpr):
        """Step i's map (20 components [BC, G]) from `_bd4_split`'s tuples."""
        return (s[0][i], s[1][i], s[2][i], s[3][i], s[4][i], s[5][i], s[6][i], s[7][i], s[8][i], s[9][i], s[10][i],
                s[11][i], s[12][i], s[13][i], s[14][i], s[15][i], s[16][i], s[17][i], s[18][i], s[19][i])

    @triton.jit
    def _bd4_tile_maps(maps, BC: tl.constexpr, BT: tl.constexpr, REVERSE: tl.constexpr):
        """`_bd2_tile_maps` for 4 x 4 maps (20 components [BC, BT]) and 4 steps a thread: x_t = A_t x_{t-1} + b_t
        over a tile (REVERSE: x_t = A_t x_{t+1} + b_t); returns the 20 components [BC, BT / 4] of the maps from the
        carry entering the tile to x at each group's far edge (its last step, or first in REVERSE), from which
        `_bd4_tile_states` gives x. Steps outside [0, T) must be the identity forward, zero in reverse."""
        G: tl.constexpr = BT // 4
        s = _bd4_split(maps, BC, G)
        if REVERSE:  # compose from the last step back
            p = _companion4_combine(*_bd4_step(s, 3), *_bd4_step(s, 2))
            p = _companion4_combine(*p, *_bd4_step(s, 1))
            p = _companion4_combine(*p, *_bd4_step(s, 0))
        else:
            p = _companion4_combine(*_bd4_step(s, 0), *_bd4_step(s, 1))
            p = _companion4_combine(*p, *_bd4_step(s, 2))
            p = _companion4_combine(*p, *_bd4_step(s, 3))
        return tl.associative_scan(p, 1, _companion4_combine, reverse=REVERSE)

    @triton.jit
    def _bd4_tile_states(maps, m, c0, c1, c2, c3, BC: tl.constexpr, BT: tl.constexpr, REVERSE: tl.constexpr):
        """Second half: x (4 x [BC, BT]) of a tile from the carry (c0..c3) [BC] (x before the tile's first step, or
        after its last one in REVERSE) and the group maps m of `_bd4_tile_maps`, and x at the tile's other end
        (4 x [BC]): each group's carry is x at the edge of the group before it (tl.gather), its 4 steps follow."""
        G: tl.constexpr = BT // 4
        s = _bd4_split(maps, BC, G)
        group = tl.broadcast_to(tl.arange(0, G)[None, :], [BC, G])
        if REVERSE:
            neighbour, edge_group, far_group = tl.minimum(group + 1, G - 1), G - 1, 0
        else:
            neighbour, edge_group, far_group = tl.maximum(group - 1, 0), 0, G - 1
        end0 = _apply4(m[0], m[1], m[2], m[3], m[16], c0, c1, c2, c3)  # x at each group's far edge
        end1 = _apply4(m[4], m[5], m[6], m[7], m[17], c0, c1, c2, c3)
        end2 = _apply4(m[8], m[9], m[10], m[11], m[18], c0, c1, c2, c3)
        end3 = _apply4(m[12], m[13], m[14], m[15], m[19], c0, c1, c2, c3)
        w0 = tl.where(group == edge_group, c0[:, None], tl.gather(end0, neighbour, 1))  # each group's carry
        w1 = tl.where(group == edge_group, c1[:, None], tl.gather(end1, neighbour, 1))
        w2 = tl.where(group == edge_group, c2[:, None], tl.gather(end2, neighbour, 1))
        w3 = tl.where(group == edge_group, c3[:, None], tl.gather(end3, neighbour, 1))
        if REVERSE:
            x3 = _apply_map4(w0, w1, w2, w3, _bd4_step(s, 3))
            x2 = _apply_map4(*x3, _bd4_step(s, 2))
            x1 = _apply_map4(*x2, _bd4_step(s, 1))
            x0 = _apply_map4(*x1, _bd4_step(s, 0))
        else:
            x0 = _apply_map4(w0, w1, w2, w3, _bd4_step(s, 0))
            x1 = _apply_map4(*x0, _bd4_step(s, 1))
            x2 = _apply_map4(*x1, _bd4_step(s, 2))
            x3 = _apply_map4(*x2, _bd4_step(s, 3))
        far = group == far_group
        return (_join_steps4(x0[0], x1[0], x2[0], x3[0], BC, G), _join_steps4(x0[1], x1[1], x2[1], x3[1], BC, G),
                _join_steps4(x0[2], x1[2], x2[2], x3[2], BC, G), _join_steps4(x0[3], x1[3], x2[3], x3[3], BC, G),
                tl.sum(tl.where(far, end0, 0.0), axis=1), tl.sum(tl.where(far, end1, 0.0), axis=1),
                tl.sum(tl.where(far, end2, 0.0), axis=1), tl.sum(tl.where(far, end3, 0.0), axis=1))

    @triton.jit
    def _bd4_tile_in_threads(maps, c0, c1, c2, c3, BC: tl.constexpr, BT: tl.constexpr, REVERSE: tl.constexpr,
                             SEGMENTS: tl.constexpr):
        """`_bd4_tile_maps` then `_bd4_tile_states`: x (4 x [BC, BT]) and x at the tile's other end (4 x [BC]).
        SEGMENTS as `_bd2_tile`'s (the runs joined by `_segment_carries4`)."""
        m = _bd4_tile_maps(maps, BC, BT, REVERSE)
        if SEGMENTS > 1:
            c0, c1, c2, c3, leaving0, leaving1, leaving2, leaving3 = _segment_carries4(m, c0, c1, c2, c3, REVERSE)
        x0, x1, x2, x3, far0, far1, far2, far3 = _bd4_tile_states(maps, m, c0, c1, c2, c3, BC, BT, REVERSE)
        if SEGMENTS > 1:
            far0, far1, far2, far3 = leaving0, leaving1, leaving2, leaving3
        return x0, x1, x2, x3, far0, far1, far2, far3

    @triton.jit
    def _segment_carries4(m, c0, c1, c2, c3, REVERSE: tl.constexpr):
        """`_segment_carries` for 4 x 4 affine maps: from the group maps of a tile's runs (20 x [SEGMENTS, G],
        `_bd4_tile_maps`) and the carry (c0..c3) entering the tile (every entry the same), the carry entering each
        run [SEGMENTS] and the one leaving the tile (every entry the same)."""
        G: tl.constexpr = m[0].shape[1]
        group = tl.arange(0, G)[None, :]
        if REVERSE:
            edge = 0
        else:
            edge = G - 1
        r = tl.associative_scan(  # the maps from the tile's carry to each run's outgoing one
            (_pick_at(m[0], group, edge), _pick_at(m[1], group, edge), _pick_at(m[2], group, edge),
             _pick_at(m[3], group, edge), _pick_at(m[4], group, edge), _pick_at(m[5], group, edge),
             _pick_at(m[6], group, edge), _pick_at(m[7], group, edge), _pick_at(m[8], group, edge),
             _pick_at(m[9], group, edge), _pick_at(m[10], group, edge), _pick_at(m[11], group, edge),
             _pick_at(m[12], group, edge), _pick_at(m[13], group, edge), _pick_at(m[14], group, edge),
             _pick_at(m[15], group, edge), _pick_at(m[16], group, edge), _pick_at(m[17], group, edge),
             _pick_at(m[18], group, edge), _pick_at(m[19], group, edge)),
            0, _companion4_combine, reverse=REVERSE)
        e0, e1, e2, e3 = _apply_map4(c0, c1, c2, c3, r)
        entering0, leaving0 = _run_edges(e0, c0, REVERSE)
        entering1, leaving1 = _run_edges(e1, c1, REVERSE)
        entering2, leaving2 = _run_edges(e2, c2, REVERSE)
        entering3, leaving3 = _run_edges(e3, c3, REVERSE)
        return entering0, entering1, entering2, entering3, leaving0, leaving1, leaving2, leaving3

    @triton.jit
    def _bd4_load_bias(gate_bias, blocks, b, N, mc, HAS_BIAS: tl.constexpr):
        """The 20 logit biases [BC] of blocks' rows (gate_bias[n, j, k] at 5 j + k), zeros without a bias."""
        return (_load_bias(gate_bias, blocks, b, N, 0, 20, mc, HAS_BIAS),
                _load_bias(gate_bias, blocks, b, N, 1, 20, mc, HAS_BIAS),
                _load_bias(gate_bias, blocks, b, N, 2, 20, mc, HAS_BIAS),
                _load_bias(gate_bias, blocks, b, N, 3, 20, mc, HAS_BIAS),
                _load_bias(gate_bias, blocks, b, N, 4, 20, mc, HAS_BIAS),
                _load_bias(gate_bias, blocks, b, N, 5, 20, mc, HAS_BIAS),
                _load_bias(gate_bias, blocks, b, N, 6, 20, mc, HAS_BIAS),
                _load_bias(gate_bias, blocks, b, N, 7, 20, mc, HAS_BIAS),
                _load_bias(gate_bias, blocks, b, N, 8, 20, mc, HAS_BIAS),
                _load_bias(gate_bias, blocks, b, N, 9, 20, mc, HAS_BIAS),
                _load_bias(gate_bias, blocks, b, N, 10, 20, mc, HAS_BIAS),
                _load_bias(gate_bias, blocks, b, N, 11, 20, mc, HAS_BIAS),
                _load_bias(gate_bias, blocks, b, N, 12, 20, mc, HAS_BIAS),
                _load_bias(gate_bias, blocks, b, N, 13, 20, mc, HAS_BIAS),
                _load_bias(gate_bias, blocks, b, N, 14, 20, mc, HAS_BIAS),
                _load_bias(gate_bias, blocks, b, N, 15, 20, mc, HAS_BIAS),
                _load_bias(gate_bias, blocks, b, N, 16, 20, mc, HAS_BIAS),
                _load_bias(gate_bias, blocks, b, N, 17, 20, mc, HAS_BIAS),
                _load_bias(gate_bias, blocks, b, N, 18, 20, mc, HAS_BIAS),
                _load_bias(gate_bias, blocks, b, N, 19, 20, mc, HAS_BIAS))

    @triton.jit
    def _bd4_load_logits(gates, blocks, steps, mask, T, bias, HAS_BIAS: tl.constexpr):
        """The blocks' 20 logits [rows, BT] at steps [1 or rows, BT], row j's five at 5 j .. 5 j + 4 (plus their
        bias)."""
        z0 = _load_five_at(gates, 4 * blocks, steps, mask, T, bias[0], bias[1], bias[2], bias[3], bias[4], HAS_BIAS)
        z1 = _load_five_at(gates, 4 * blocks + 1, steps, mask, T, bias[5], bias[6], bias[7], bias[8], bias[9],
                           HAS_BIAS)
        z2 = _load_five_at(gates, 4 * blocks + 2, steps, mask, T, bias[10], bias[11], bias[12], bias[13], bias[14],
                           HAS_BIAS)
        z3 = _load_five_at(gates, 4 * blocks + 3, steps, mask, T, bias[15], bias[16], bias[17], bias[18], bias[19],
                           HAS_BIAS)
        return z0 + z1 + z2 + z3

    @triton.jit
    def _bd4_normalize(z, ACT: tl.constexpr):
        """The 20 logits -> (A row-major (16), g (4)): each row normalised over its five."""
        a00, a01, a02, a03, g0 = _normalize_five(z[0], z[1], z[2], z[3], z[4], ACT)
        a10, a11, a12, a13, g1 = _normalize_five(z[5], z[6], z[7], z[8], z[9], ACT)
        a20, a21, a22, a23, g2 = _normalize_five(z[10], z[11], z[12], z[13], z[14], ACT)
        a30, a31, a32, a33, g3 = _normalize_five(z[15], z[16], z[17], z[18], z[19], ACT)
        return (a00, a01, a02, a03, a10, a11, a12, a13, a20, a21, a22, a23, a30, a31, a32, a33), (g0, g1, g2, g3)

    @triton.heuristics({"EVEN": _even})
    @triton.jit
    def _bd4_time_last_fwd_kernel(gates, gate_bias, values, initial_state, starts, states, final_state, T, N,
                                  ACT: tl.constexpr, BC: tl.constexpr, BT: tl.constexpr, SEGMENTS: tl.constexpr,
                                  STAGES: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_H0: tl.constexpr,
                                  WRITE_FINAL: tl.constexpr, HAS_STARTS: tl.constexpr, EVEN: tl.constexpr):
        """BD-LRU block size 4 for BC blocks: states[block, j, t] = h_t[j]; initial / final state [4]; the state
        restarts from zero before every document start (A_t = 0 there). Composed 4 steps a thread (`_bd4_tile_maps`,
        `_bd4_tile_states`). SEGMENTS (one block a program): a tile is SEGMENTS runs of BT steps, a warp each, joined
        across the warps (`_segment_carries4`). STAGES as at H-LRU m = 1."""
        tl.static_assert(SEGMENTS == 1 or BC == 1, "segments: one block a program")
        R: tl.constexpr = BC * SEGMENTS  # a tile's rows: BC blocks, or one block's SEGMENTS runs
        SPAN: tl.constexpr = BT * SEGMENTS  # a tile's steps
        b, blocks, mc = _tile_offsets(T, N, BC)
        bias = _bd4_load_bias(gate_bias, blocks, b, N, mc, HAS_BIAS)
        i0, i1, i2, i3 = _load_four(initial_state, blocks, mc, HAS_H0)
        zero = tl.zeros([R], dtype=tl.float32)  # (with segments: the tile's state in every entry)
        h0, h1, h2, h3 = zero + i0, zero + i1, zero + i2, zero + i3
        lane = (tl.arange(0, SEGMENTS) * BT)[:, None] + tl.arange(0, BT)[None, :]  # [SEGMENTS, BT]: steps in a tile
        for t0 in tl.range(0, T, SPAN, num_stages=STAGES):
            steps = t0 + lane
            mask = _in_bounds(mc, steps, T, EVEN)
            a, g = _bd4_normalize(_bd4_load_logits(gates, blocks, steps, mask, T, bias, HAS_BIAS), ACT)
            x0 = _load_values_at(values, 4 * blocks, steps, mask, T)
            x1 = _load_values_at(values, 4 * blocks + 1, steps, mask, T)
            x2 = _load_values_at(values, 4 * blocks + 2, steps, mask, T)
            x3 = _load_values_at(values, 4 * blocks + 3, steps, mask, T)
            inside = mask & ~_starts_in(starts, b, steps, T, HAS_STARTS)  # a document start: A = 0, from zero
            maps = (  # steps past T: the identity
                tl.where(mask, tl.where(inside, a[0], 0.0), 1.0), tl.where(inside, a[1], 0.0),
                tl.where(inside, a[2], 0.0), tl.where(inside, a[3], 0.0),
                tl.where(inside, a[4], 0.0), tl.where(mask, tl.where(inside, a[5], 0.0), 1.0),
                tl.where(inside, a[6], 0.0), tl.where(inside, a[7], 0.0),
                tl.where(inside, a[8], 0.0), tl.where(inside, a[9], 0.0),
                tl.where(mask, tl.where(inside, a[10], 0.0), 1.0), tl.where(inside, a[11], 0.0),
                tl.where(inside, a[12], 0.0), tl.where(inside, a[13], 0.0), tl.where(inside, a[14], 0.0),
                tl.where(mask, tl.where(inside, a[15], 0.0), 1.0),
                tl.where(mask, g[0] * x0, 0.0), tl.where(mask, g[1] * x1, 0.0), tl.where(mask, g[2] * x2, 0.0),
                tl.where(mask, g[3] * x3, 0.0))
            new0, new1, new2, new3, h0, h1, h2, h3 = _bd4_tile_in_threads(maps, h0, h1, h2, h3, R, BT, False,
                                                                          SEGMENTS)
            rows = (4 * blocks)[:, None] * T + steps
            tl.store(states + rows, new0.to(states.dtype.element_ty), mask=mask)
            tl.store(states + rows + T, new1.to(states.dtype.element_ty), mask=mask)
            tl.store(states + rows + 2 * T, new2.to(states.dtype.element_ty), mask=mask)
            tl.store(states + rows + 3 * T, new3.to(states.dtype.element_ty), mask=mask)
        if WRITE_FINAL:
            _store_four(final_state, blocks, mc, _first_run(h0, SEGMENTS), _first_run(h1, SEGMENTS),
                        _first_run(h2, SEGMENTS), _first_run(h3, SEGMENTS))

    @triton.jit
    def _bd4_row_gradients(d_gates, gate_rows, T, z, j: tl.constexpr, lam, s0, s1, s2, s3, x, mask,
                           ACT: tl.constexpr):
        """Row j's five logit gradients [BC, BT] from d a_jk = lam_j h_{t-1}[k] and d g_j = lam_j v_j, stored at
        gate_rows + (5 j + k) T; returned for the bias's sums."""
        dz = _normalize_five_bwd(z[5 * j], z[5 * j + 1], z[5 * j + 2], z[5 * j + 3], z[5 * j + 4],
                                 lam * s0, lam * s1, lam * s2, lam * s3, lam * x, ACT)
        tl.store(d_gates + gate_rows + (5 * j) * T, dz[0].to(d_gates.dtype.element_ty), mask=mask)
        tl.store(d_gates + gate_rows + (5 * j + 1) * T, dz[1].to(d_gates.dtype.element_ty), mask=mask)
        tl.store(d_gates + gate_rows + (5 * j + 2) * T, dz[2].to(d_gates.dtype.element_ty), mask=mask)
        tl.store(d_gates + gate_rows + (5 * j + 3) * T, dz[3].to(d_gates.dtype.element_ty), mask=mask)
        tl.store(d_gates + gate_rows + (5 * j + 4) * T, dz[4].to(d_gates.dtype.element_ty), mask=mask)
        return dz

    @triton.jit
    def _bd4_bias_sums(dz, j: tl.constexpr, mask, columns):
        """[BC, 32]: row j's five logit gradients summed over the tile's steps, in columns 5 j .. 5 j + 4."""
        sums = tl.where(columns == 5 * j, tl.sum(tl.where(mask, dz[0], 0.0), axis=1)[:, None], 0.0)
        sums += tl.where(columns == 5 * j + 1, tl.sum(tl.where(mask, dz[1], 0.0), axis=1)[:, None], 0.0)
        sums += tl.where(columns == 5 * j + 2, tl.sum(tl.where(mask, dz[2], 0.0), axis=1)[:, None], 0.0)
        sums += tl.where(columns == 5 * j + 3, tl.sum(tl.where(mask, dz[3], 0.0), axis=1)[:, None], 0.0)
        sums += tl.where(columns == 5 * j + 4, tl.sum(tl.where(mask, dz[4], 0.0), axis=1)[:, None], 0.0)
        return sums

    @triton.heuristics({"EVEN": _even})
    @triton.jit
    def _bd4_adjoint_kernel(gates, gate_bias, starts, d_states, d_final, adjoints, T, N, ACT: tl.constexpr,
                            BC: tl.constexpr, BT: tl.constexpr, SEGMENTS: tl.constexpr, HAS_BIAS: tl.constexpr,
                            HAS_D_FINAL: tl.constexpr, HAS_STARTS: tl.constexpr, EVEN: tl.constexpr):
        """BD-LRU block size 4's backward, first kernel: the adjoint lam_t = dy_t + A_{t+1}^T lam_{t+1} (the final
        state's gradient added at T - 1; A = 0 at a document start) scanned in reverse time a tile at a time
        (`_bd4_tile_maps` / `_bd4_tile_states` with REVERSE; SEGMENTS as the forward's, the runs joined in reverse)
        and stored into adjoints [B, N, 4, T] (`_bd4_backward` says where) for `_bd4_gradients_kernel`."""
        tl.static_assert(SEGMENTS == 1 or BC == 1, "segments: one block a program")
        R: tl.constexpr = BC * SEGMENTS
        SPAN: tl.constexpr = BT * SEGMENTS
        b, blocks, mc = _tile_offsets(T, N, BC)
        bias = _bd4_load_bias(gate_bias, blocks, b, N, mc, HAS_BIAS)
        l0 = tl.zeros([R], dtype=tl.float32)  # lam at the step after the tile (with segments: in every entry)
        l1 = tl.zeros([R], dtype=tl.float32)
        l2 = tl.zeros([R], dtype=tl.float32)
        l3 = tl.zeros([R], dtype=tl.float32)
        df0, df1, df2, df3 = _load_four(d_final, blocks, mc, HAS_D_FINAL)
        lane = (tl.arange(0, SEGMENTS) * BT)[:, None] + tl.arange(0, BT)[None, :]  # [SEGMENTS, BT]: steps in a tile
        num_tiles = tl.cdiv(T, SPAN)
        for i in range(0, num_tiles):
            steps = (num_tiles - 1 - i) * SPAN + lane
            mask = _in_bounds(mc, steps, T, EVEN)
            coupled = mc[:, None] & (steps + 1 < T) & ~_starts_in(starts, b, steps + 1, T, HAS_STARTS)
            n, _ = _bd4_normalize(_bd4_load_logits(gates, blocks, steps + 1, coupled, T, bias, HAS_BIAS), ACT)
            last = steps == T - 1
            rows = (4 * blocks)[:, None] * T + steps
            maps = (  # C_t = A_{t+1}^T; 0 from T - 1 on and before a start
                tl.where(coupled, n[0], 0.0), tl.where(coupled, n[4], 0.0), tl.where(coupled, n[8], 0.0),
                tl.where(coupled, n[12], 0.0), tl.where(coupled, n[1], 0.0), tl.where(coupled, n[5], 0.0),
                tl.where(coupled, n[9], 0.0), tl.where(coupled, n[13], 0.0), tl.where(coupled, n[2], 0.0),
                tl.where(coupled, n[6], 0.0), tl.where(coupled, n[10], 0.0), tl.where(coupled, n[14], 0.0),
                tl.where(coupled, n[3], 0.0), tl.where(coupled, n[7], 0.0), tl.where(coupled, n[11], 0.0),
                tl.where(coupled, n[15], 0.0),
                tl.load(d_states + rows, mask=mask, other=0.0).to(tl.float32) + tl.where(last, df0[:, None], 0.0),
                tl.load(d_states + rows + T, mask=mask, other=0.0).to(tl.float32) + tl.where(last, df1[:, None], 0.0),
                tl.load(d_states + rows + 2 * T, mask=mask, other=0.0).to(tl.float32) +
                tl.where(last, df2[:, None], 0.0),
                tl.load(d_states + rows + 3 * T, mask=mask, other=0.0).to(tl.float32) +
                tl.where(last, df3[:, None], 0.0))
            lam0, lam1, lam2, lam3, l0, l1, l2, l3 = _bd4_tile_in_threads(maps, l0, l1, l2, l3, R, BT, True,
                                                                          SEGMENTS)
            tl.store(adjoints + rows, lam0.to(adjoints.dtype.element_ty), mask=mask)
            tl.store(adjoints + rows + T, lam1.to(adjoints.dtype.element_ty), mask=mask)
            tl.store(adjoints + rows + 2 * T, lam2.to(adjoints.dtype.element_ty), mask=mask)
            tl.store(adjoints + rows + 3 * T, lam3.to(adjoints.dtype.element_ty), mask=mask)

    @triton.heuristics({"EVEN": _even})
    @triton.jit
    def _bd4_gradients_kernel(gates, gate_bias, values, states, initial_state, starts, adjoints, d_gates, d_values,
                              d_initial_state, d_bias_parts, T, N, ACT: tl.constexpr, BC: tl.constexpr,
                              BT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_H0: tl.constexpr,
                              HAS_STARTS: tl.constexpr, EVEN: tl.constexpr):
        """BD-LRU block size 4's backward, second kernel: per step, from lam_t (`_bd4_adjoint_kernel`), the step's
        logits, values and h_{t-1}, the logit gradients through each row's normalisation (d A_t[j, k] = lam_t[j]
        h_{t-1}[k], d g_t[j] = lam_t[j] v_t[j]) and the values' (lam_t[j] g_t[j]); the initial state's (A_0^T lam_0)
        in the first tile. No step waits on another, so one program per (row, BC blocks, tile of BT steps): parallel
        in time. The bias's gradient summed per program into d_bias_parts [B, tiles, N, 4, 5]. adjoints may be
        d_values itself: each element's adjoint is read before its value gradient overwrites it, by the program
        that writes it."""
        tiles = tl.cdiv(T, BT)
        tile = tl.program_id(0) % tiles
        b, blocks, mc = _block_offsets(tl.program_id(0) // tiles, N, BC)
        t = tile * BT + tl.arange(0, BT)
        mask = _in_bounds(mc, t[None, :], T, EVEN)
        bias = _bd4_load_bias(gate_bias, blocks, b, N, mc, HAS_BIAS)
        z = _bd4_load_logits(gates, blocks, t[None, :], mask, T, bias, HAS_BIAS)
        a, g = _bd4_normalize(z, ACT)
        start = _starts_at(starts, b, t, T, HAS_STARTS)
        h0, h1, h2, h3 = _load_four(initial_state, blocks, mc, HAS_H0)
        before = mask & (t >= 1)[None, :]
        first = (t >= 1)[None, :]
        s0 = tl.where(start, 0.0, tl.where(first, _load_values(states, 4 * blocks, t - 1, before, T), h0[:, None]))
        s1 = tl.where(start, 0.0, tl.where(first, _load_values(states, 4 * blocks + 1, t - 1, before, T), h1[:, None]))
        s2 = tl.where(start, 0.0, tl.where(first, _load_values(states, 4 * blocks + 2, t - 1, before, T), h2[:, None]))
        s3 = tl.where(start, 0.0, tl.where(first, _load_values(states, 4 * blocks + 3, t - 1, before, T), h3[:, None]))
        rows = (4 * blocks)[:, None] * T + t[None, :]
        gate_rows = (20 * blocks)[:, None] * T + t[None, :]
        columns = tl.arange(0, 32)[None, :]
        d_bias = tl.zeros([BC, 32], dtype=tl.float32)  # HAS_BIAS: column 5 j + k sums logit (j, k)'s gradients
        # HAS_H0, first tile: d h_{-1} = A_0^T lam_0 (0 after a start), from the adjoints as loaded
        zero = tl.zeros([BC], dtype=tl.float32)
        dh0, dh1, dh2, dh3 = zero, zero, zero, zero
        keep = tl.where(start, 0.0, 1.0)
        for j in tl.static_range(4):
            lam = _load_values(adjoints, 4 * blocks + j, t, mask, T)
            x = _load_values(values, 4 * blocks + j, t, mask, T)
            dz = _bd4_row_gradients(d_gates, gate_rows, T, z, j, lam, s0, s1, s2, s3, x, mask, ACT)
            tl.store(d_values + rows + j * T, (lam * g[j]).to(d_values.dtype.element_ty), mask=mask)
            if HAS_BIAS:
                d_bias += _bd4_bias_sums(dz, j, mask, columns)
            if HAS_H0:
                if tile == 0:
                    lam_0 = _pick(lam, t, 0)
                    dh0 += _pick(a[4 * j] * keep, t, 0) * lam_0
                    dh1 += _pick(a[4 * j + 1] * keep, t, 0) * lam_0
                    dh2 += _pick(a[4 * j + 2] * keep, t, 0) * lam_0
                    dh3 += _pick(a[4 * j + 3] * keep, t, 0) * lam_0
        if HAS_BIAS:
            parts = (b * tiles + tile) * N + (blocks - b * N)
            tl.store(d_bias_parts + (20 * parts)[:, None] + columns, d_bias, mask=mc[:, None] & (columns < 20))
        if HAS_H0:
            if tile == 0:
                _store_four(d_initial_state, blocks, mc, dh0, dh1, dh2, dh3)


def _contiguous(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return t.contiguous() if t is not None else None


def _tile():
    return INTERPRETER_TILE if _INTERPRET else TILE


def _backward_register_cap(programs: int, num_warps: int, device, most: Optional[int] = None) -> Optional[int]:
    """`maxnreg` for an in-thread backward launch of `programs` programs of `num_warps` warps, or None (the
    compiler's choice): the most registers per thread at which every program is resident at once (REGISTERS_PER_SM
    over the warps of ceil(programs / SMs) programs, in the allocation unit of 8) where that is at least
    MIN_BACKWARD_REGISTERS and under 256, the hardware's most; `most` bounds it, and applies alone otherwise."""
    per_sm = -(-programs // _num_sms(device if device is not None else "cpu"))
    one_wave = REGISTERS_PER_SM // (32 * num_warps * per_sm) // 8 * 8
    cap = one_wave if MIN_BACKWARD_REGISTERS <= one_wave < 256 else None
    return most if cap is None else cap if most is None else min(cap, most)


def _fewest_waves_register_cap(programs: int, num_warps: int, device, registers: int, least: int) -> Optional[int]:
    """`maxnreg` for a backward launch of `programs` programs of `num_warps` warps that holds `registers` a thread
    (as allocated) and spills nothing down to `least`: the most registers under which the grid runs in the fewest
    waves (rounds of resident programs per SM) that any cap down to `least` allows, or None where `registers`
    already run it in that many."""
    per_sm = -(-programs // _num_sms(device if device is not None else "cpu"))

    def waves(cap):
        return -(-per_sm // max(1, REGISTERS_PER_SM // (32 * num_warps * cap)))

    fewest = waves(least)
    if waves(registers) == fewest:
        return None
    return REGISTERS_PER_SM // (32 * num_warps * -(-per_sm // fewest)) // 8 * 8


def _tile_steps(BT: int, T: int) -> int:
    """A tile of BT steps, or fewer for a short sequence: the power of two that covers T, at least 16."""
    return min(BT, max(16, triton.next_power_of_2(max(T, 1))))


def _grid(B: int, N: int, T: int, device=None, backward: bool = False, order: int = 1, blocked: bool = False,
          gate_bias: bool = False, itemsize: int = 2):
    """(grid, launch options): one program per (row, block of BC channels, or BC blocks of BD-LRU of block size 2,
    `blocked`, which launches as H-LRU m = 2 does, small below BD2_SMALL_GRID_BELOW; H-LRU m = 2's forward is small
    below M2_FORWARD_SMALL_GRID_BELOW). A grid of fewer than SMALL_GRID_BELOW programs per SM (B1 T16384 D1024: 1024
    programs at m = 1, 8 per SM) cannot hide the loads' latency by switching programs. Every forward's tile loop is
    software-pipelined (STAGES = FORWARD_STAGES: the next tiles' loads in flight while this one is scanned), except
    BD-LRU block size 2's on grids of BD2_REGISTER_PREFETCH_FROM programs per SM or more, which loads the next tile
    into registers instead (PREFETCH), and any forward whose pipeline buffers would pass PIPELINE_SHARED_BYTES at
    inputs of `itemsize` bytes (`_forward_stages`; BD-LRU block size 2 then prefetches in registers); of the backwards
    only BD-LRU block size 2's in threads (BD2_BACKWARD_STAGES, `_pipeline_stages`). H-LRU m = 2
    composes its steps in threads on every grid (IN_THREADS_TILE on a GPU), BD-LRU block size 2 on grids that are
    not small (IN_THREADS).
    In threads, the backwards take the one-wave register cap (`_backward_register_cap`), except BD-LRU's: it spilled
    under it, 52.9 -> 26.4 % of copy forward+backward at B8 T4096 D1024 with 64 registers
    (bench_results/probes_2026-12-01/bdlru2/); without a `gate_bias` it takes the cap of the fewest waves down to the
    registers where it spills nothing (`_fewest_waves_register_cap`, BD2_BACKWARD_REGISTERS). On small grids H-LRU
    m = 2 and BD-LRU block size 2 run each row's tile as several runs, a warp each (SEGMENTS, `_m2_segments`): H-LRU
    m = 2 always (the rule gives it 2 runs or more on every small grid), BD-LRU where the rule gives 2 runs or more
    (else its tile scan).
    Order 4 (H-LRU m = 4; BD-LRU block size 4 with `blocked`) composes in threads on every grid, in M4_TILE / BD4_TILE
    (on small grids BD-LRU's in segments, BD4_SEGMENTS; H-LRU's forward in segments, M4_SEGMENTS, where that gives 2
    runs or more, else in chunks joined by a look-back, as its backward always is there)."""
    sms = _num_sms(device if device is not None else "cpu")
    if order == 4:  # composed in threads on every grid
        options = dict(INTERPRETER_TILE if _INTERPRET else BD4_TILE if blocked else M4_TILE)
        options["BT"] = _tile_steps(options["BT"], T)
        programs = B * triton.cdiv(N, options["BC"])
        if not blocked:  # H-LRU m = 4: chunks of one tile on small grids, unless results must repeat bit for bit
            tiles = triton.cdiv(T, options["BT"])  # (a look-back composes what it finds, which varies between runs)
            small = programs < M4_CHUNKED_BELOW * sms
            segments = _m2_segments(B * N, device, M4_WARPS_PER_SM) if small and M4_SEGMENTS and not backward else 1
            chunked = tiles > 1 and small and segments == 1 and not torch.are_deterministic_algorithms_enabled()
            options.update(CHUNKED=chunked, num_chunks=tiles if chunked else 1, PREFIX_EVERY=_PREFIX_EVERY)
            if not backward:  # the forward's rows in runs of a tile, a warp each, instead of chunks
                options["SEGMENTS"] = segments
                if segments > 1:
                    options.update(BC=1, num_warps=segments)
                    programs = B * N
            programs *= options["num_chunks"]
        else:  # BD-LRU block size 4: a small grid's rows in segments, a warp a run (BD4_SEGMENTS; 1: whole rows)
            segments = _m2_segments(B * N, device, BD4_WARPS_PER_SM) if BD4_SEGMENTS else 1
            options["SEGMENTS"] = segments
            if segments > 1:
                options.update(BC=1, num_warps=segments * options["num_warps"])
                programs = B * N
        if backward and not blocked and not _INTERPRET:  # BD-LRU block size 4: no cap
            options["maxnreg"] = _backward_register_cap(programs, options["num_warps"], device,
                                                        most=M4_BACKWARD_REGISTERS)
        if not backward:
            options["STAGES"] = _forward_stages(options, order, blocked, itemsize)
        return (programs,), options
    tile = _tile()
    if blocked:
        small_below = BD2_SMALL_GRID_BELOW
    elif order == 2 and not backward:
        small_below = M2_FORWARD_SMALL_GRID_BELOW
    else:
        small_below = SMALL_GRID_BELOW
    small = B * triton.cdiv(N, tile["BC"]) < small_below * sms
    in_threads = order == 2 and (not small or not blocked)  # H-LRU m = 2 on every grid, BD-LRU's on large ones
    options = dict(BC=tile["BC"], BT=tile["BT"], num_warps=tile["num_warps"])
    if in_threads and not _INTERPRET:
        options.update(IN_THREADS_TILE)
    if order == 2:
        # small grids in segments of a row, a warp each: H-LRU m = 2's always (1 run: a warp a row), BD-LRU block
        # size 2's from 2 runs (else the tile scan)
        if blocked:
            warps_per_sm = BD2_BACKWARD_WARPS_PER_SM if backward else M2_WARPS_PER_SM
        else:
            warps_per_sm = M2_BACKWARD_WARPS_PER_SM if backward else M2_WARPS_PER_SM
        segments = _m2_segments(B * N, device, warps_per_sm) if small else 1
        in_segments = small and (not blocked or (segments > 1 and BD2_SEGMENTS))
        options["SEGMENTS"] = segments if in_segments else 1
        if in_segments:
            in_threads = True
            options.update(BC=1, num_warps=segments, BT=(INTERPRETER_TILE if _INTERPRET else IN_THREADS_TILE)["BT"])
        if blocked:  # (H-LRU m = 2's kernels compose in threads only)
            options["IN_THREADS"] = in_threads
    options["BT"] = _tile_steps(options["BT"], T)
    programs = B * triton.cdiv(N, options["BC"])
    if not backward:  # the tile loop pipelined, except BD-LRU block size 2's on large grids: a register prefetch
        stages = _forward_stages(options, order, blocked, itemsize)
        prefetch = blocked and (stages == 1 or programs >= BD2_REGISTER_PREFETCH_FROM * sms)
        options["STAGES"] = 1 if prefetch else stages
        if blocked:
            options["PREFETCH"] = prefetch
    if backward and blocked:  # BD-LRU block size 2 pipelines its backward in threads (18 input rows a block)
        stages = BD2_BACKWARD_SMALL_GRID_STAGES if programs < SMALL_GRID_BELOW * sms else BD2_BACKWARD_STAGES
        tile_bytes = 18 * options["BC"] * options["SEGMENTS"] * options["BT"] * itemsize
        options["STAGES"] = _pipeline_stages(stages, tile_bytes) if in_threads else 1
    if backward and in_threads and not _INTERPRET:  # in threads or in segments
        if not blocked:
            cap = _backward_register_cap(programs, options["num_warps"], device)
        elif options["SEGMENTS"] == 1 and not gate_bias:
            cap = _fewest_waves_register_cap(programs, options["num_warps"], device, BD2_BACKWARD_REGISTERS,
                                             BD2_BACKWARD_LEAST_REGISTERS)
        else:
            cap = None
        if cap is not None:
            options["maxnreg"] = cap
    return (programs,), options


def _forward_stages(options: dict, order: int, blocked: bool, itemsize: int) -> int:
    """FORWARD_STAGES, or 1 (no software pipeline) where its buffers, FORWARD_STAGES - 1 tiles of a forward's input
    rows at `itemsize` bytes, would pass PIPELINE_SHARED_BYTES. A channel of H-LRU of `order` m loads m + 1 logit rows
    and a value row; a block of BD-LRU of block size m (`blocked`) m times that."""
    rows_loaded = (order + 2) * (order if blocked else 1)
    tile_bytes = rows_loaded * options["BC"] * options.get("SEGMENTS", 1) * options["BT"] * itemsize
    return FORWARD_STAGES if _pipeline_stages(FORWARD_STAGES, tile_bytes) == FORWARD_STAGES else 1


def _pipeline_stages(stages: int, tile_bytes: int) -> int:
    """`stages`, or fewer (1: no software pipeline) where the buffers, stages - 1 tiles of `tile_bytes` each, would
    pass PIPELINE_SHARED_BYTES."""
    while stages > 1 and (stages - 1) * tile_bytes > PIPELINE_SHARED_BYTES:
        stages -= 1
    return stages


def _m2_segments(rows: int, device, warps_per_sm: int = M2_WARPS_PER_SM) -> int:
    """Runs a row's tile splits into on a small grid of `rows` one-channel (or one-block) programs: the power of
    two, rounded down, that brings the grid nearest `warps_per_sm` warps per SM from below, 1 to M2_MOST_SEGMENTS (or
    M2_SEGMENTS where a test sets it). H-LRU m = 2 (M2_WARPS_PER_SM forward, M2_BACKWARD_WARPS_PER_SM backward),
    BD-LRU block size 2 (M2_WARPS_PER_SM, BD2_BACKWARD_WARPS_PER_SM) and 4 (BD4_WARPS_PER_SM)."""
    if M2_SEGMENTS is not None:
        return M2_SEGMENTS
    wanted = warps_per_sm * _num_sms(device if device is not None else "cpu") / max(rows, 1)
    return max(1, min(M2_MOST_SEGMENTS, 2 ** int(math.floor(math.log2(wanted))) if wanted >= 1 else 1))


def _look_back_workspace(B: int, N: int, options: dict, device) -> dict:
    """The chunked order-4 kernels' look-back tensors (flags and stream counters zeroed; each chunk's maps [B * N, 20]
    and outgoing carries [B * N, 4], float32), or None each for a launch of whole rows."""
    if not options.get("CHUNKED"):
        return dict(flags=None, counters=None, aggregates=None, prefixes=None)
    num_chunks = options["num_chunks"]
    streams = B * triton.cdiv(N, options["BC"])
    flags = torch.zeros(num_chunks * streams + streams, dtype=torch.int32, device=device)  # flags, then counters
    carries = torch.empty(num_chunks * B * N * 24, dtype=torch.float32, device=device)  # maps, then prefixes
    return dict(flags=flags, counters=flags[num_chunks * streams:], aggregates=carries[:num_chunks * B * N * 20],
                prefixes=carries[num_chunks * B * N * 20:])


def time_last_forward(gates: torch.Tensor, values: torch.Tensor, initial_state: Optional[torch.Tensor],
                      gate_activation: str, want_final: bool, starts: Optional[torch.Tensor] = None,
                      gate_bias: Optional[torch.Tensor] = None, window: bool = False
                      ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """H-LRU: gates [B, N, m+1, T] (m = 1, 2 or 4), values [B, N, T], initial_state [B, N, m] or None, gate_bias
    [N, m+1] or None -> (states [B, N, T] in values' dtype, or with `window` the window [B, N, m, T] = (s_t, ...,
    s_{t-m+1}) at every step; final window [B, N, m] float32 or None). BD-LRU of block size m = 2 or 4: gates [B, N,
    m, m+1, T], values [B, N, m, T], initial_state [B, N, m] or None, gate_bias [N, m, m+1] or None -> (states
    [B, N, m, T], final state [B, N, m] or None); no `window`. Both: starts [B, T] bool or None (the window or
    state restarts from zero before every step where it is True), the bias added to every step's logits."""
    blocked = gates.dim() == 5
    B, N, T = gates.shape[0], gates.shape[1], gates.shape[-1]
    m = gates.shape[2] if blocked else gates.shape[2] - 1
    gates, values = gates.contiguous(), values.contiguous()
    h0 = initial_state.to(torch.float32).contiguous() if initial_state is not None else None
    states = values.new_empty(B, N, m, T) if window else torch.empty_like(values)
    final = torch.empty(B, N, m, device=values.device, dtype=torch.float32) if want_final else None
    if B * N == 0:
        return states, (final.zero_() if final is not None else None)
    if T == 0:  # no step: the final state is the initial one
        return states, ((h0.clone() if h0 is not None else final.zero_()) if want_final else None)
    itemsize = max(gates.element_size(), values.element_size())  # the pipeline's buffers hold both
    if blocked:
        grid, blocks = _grid(B, N, T, values.device, order=m, blocked=True, itemsize=itemsize)
        kernel = {2: _bd2_time_last_fwd_kernel, 4: _bd4_time_last_fwd_kernel}[m]
    else:
        grid, blocks = _grid(B, N, T, values.device, order=m, itemsize=itemsize)
        kernel = {1: _time_last_fwd_kernel, 2: _time_last_m2_fwd_kernel, 4: _time_last_m4_fwd_kernel}[m]
        if m > 1:  # at m = 1 the window is the states
            blocks["WINDOW"] = window
        if m == 4:
            blocks.update(_look_back_workspace(B, N, blocks, values.device), B=B)
    with _device_guard(values.device):
        kernel[grid](
            gates=gates, gate_bias=_contiguous(gate_bias), values=values, initial_state=h0, starts=_contiguous(starts),
            states=states, final_state=final, T=T, N=N, ACT=_ACT_ID[gate_activation], HAS_BIAS=gate_bias is not None,
            HAS_H0=h0 is not None, WRITE_FINAL=want_final, HAS_STARTS=starts is not None, **blocks)
    return states, final


def time_last_backward(gates: torch.Tensor, values: torch.Tensor, states: torch.Tensor,
                       initial_state: Optional[torch.Tensor], d_states: torch.Tensor, d_final: Optional[torch.Tensor],
                       gate_activation: str, starts: Optional[torch.Tensor] = None,
                       gate_bias: Optional[torch.Tensor] = None, window: bool = False
                       ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
    """(d gates in gates' dtype, d values in values' dtype, d initial state [B, N, m] float32 or None without an
    initial state, d gate_bias float32 of gate_bias's shape or None without a bias) for the forward of
    `time_last_forward` (with `window`: states and d_states are windows [B, N, m, T]). The bias gradient is the
    logits' summed over the steps by each program, then over the batch here (deterministic, unlike atomics)."""
    blocked = gates.dim() == 5
    B, N, T = gates.shape[0], gates.shape[1], gates.shape[-1]
    m = gates.shape[2] if blocked else gates.shape[2] - 1
    gates, values, states, d_states = gates.contiguous(), values.contiguous(), states.contiguous(), d_states.contiguous()
    h0 = initial_state.to(torch.float32).contiguous() if initial_state is not None else None
    d_final = d_final.to(torch.float32).contiguous() if d_final is not None else None
    d_gates, d_values = torch.empty_like(gates), torch.empty_like(values)
    d_h0 = torch.empty(B, N, m, device=values.device, dtype=torch.float32) if h0 is not None else None
    if B * N == 0 or T == 0:
        if d_h0 is not None:  # no step: the final state was the initial one
            d_h0.copy_(d_final if d_final is not None and T == 0 else torch.zeros_like(d_h0))
        return d_gates, d_values, d_h0, (torch.zeros(gate_bias.shape, device=values.device, dtype=torch.float32)
                                         if gate_bias is not None else None)
    if blocked and m == 4:
        d_bias = _bd4_backward(gates, gate_bias, values, states, h0, starts, d_states, d_final, d_gates, d_values, d_h0,
                               gate_activation)
        return d_gates, d_values, d_h0, d_bias
    if blocked:
        itemsize = max(t.element_size() for t in (gates, values, states, d_states))  # the pipeline's buffers
        grid, blocks = _grid(B, N, T, values.device, backward=True, order=m, blocked=True,
                             gate_bias=gate_bias is not None, itemsize=itemsize)
        kernel = _bd2_time_last_bwd_kernel
    else:
        grid, blocks = _grid(B, N, T, values.device, backward=True, order=m)
        kernel = {1: _time_last_bwd_kernel, 2: _time_last_m2_bwd_kernel, 4: _time_last_m4_bwd_kernel}[m]
        if m > 1:
            blocks["WINDOW"] = window
        if m == 4:
            blocks.update(_look_back_workspace(B, N, blocks, values.device), B=B)
    # each program's bias gradient sums, per (chunk of the chunked order-4 kernel, batch row)
    d_bias_rows = torch.empty(blocks.get("num_chunks", 1) * B, *gate_bias.shape, device=values.device,
                              dtype=torch.float32) if gate_bias is not None else None
    with _device_guard(values.device):
        kernel[grid](
            gates=gates, gate_bias=_contiguous(gate_bias), values=values, states=states, initial_state=h0,
            starts=_contiguous(starts), d_states=d_states, d_final=d_final, d_gates=d_gates, d_values=d_values,
            d_initial_state=d_h0, d_bias_rows=d_bias_rows, T=T, N=N, ACT=_ACT_ID[gate_activation],
            HAS_BIAS=gate_bias is not None, HAS_H0=h0 is not None, HAS_D_FINAL=d_final is not None,
            HAS_STARTS=starts is not None, **blocks)
    return d_gates, d_values, d_h0, (d_bias_rows.sum(0) if d_bias_rows is not None else None)


def _bd4_backward(gates, gate_bias, values, states, h0, starts, d_states, d_final, d_gates, d_values, d_h0,
                  gate_activation) -> Optional[torch.Tensor]:
    """`time_last_backward` of BD-LRU block size 4 (B * N > 0, T > 0), into d_gates, d_values and d_h0: the adjoint
    scan, then the gradients from the adjoints (BD4_GRADIENTS_TILE says why two kernels); returns the bias's
    gradient, or None without a bias."""
    B, N, T = gates.shape[0], gates.shape[1], gates.shape[-1]
    # the adjoints go where the value gradients will (no memory more than one kernel's), except in float16, whose
    # range they could leave (|lam_t| >= |d v_t| = |lam_t g_t|): there a float32 buffer
    adjoints = d_values if d_values.dtype != torch.float16 else torch.empty_like(d_values, dtype=torch.float32)
    grid, scan_tile = _grid(B, N, T, values.device, backward=True, order=4, blocked=True)
    tile = dict(INTERPRETER_TILE if _INTERPRET else BD4_GRADIENTS_TILE)
    tile["BT"] = _tile_steps(tile["BT"], T)
    tiles = triton.cdiv(T, tile["BT"])
    d_bias_parts = torch.empty(B * tiles, *gate_bias.shape, device=values.device, dtype=torch.float32) \
        if gate_bias is not None else None
    flags = dict(ACT=_ACT_ID[gate_activation], HAS_BIAS=gate_bias is not None, HAS_STARTS=starts is not None)
    with _device_guard(values.device):
        _bd4_adjoint_kernel[grid](
            gates=gates, gate_bias=_contiguous(gate_bias), starts=_contiguous(starts), d_states=d_states,
            d_final=d_final, adjoints=adjoints, T=T, N=N, HAS_D_FINAL=d_final is not None, **flags, **scan_tile)
        _bd4_gradients_kernel[(B * triton.cdiv(N, tile["BC"]) * tiles,)](
            gates=gates, gate_bias=_contiguous(gate_bias), values=values, states=states, initial_state=h0,
            starts=_contiguous(starts), adjoints=adjoints, d_gates=d_gates, d_values=d_values, d_initial_state=d_h0,
            d_bias_parts=d_bias_parts, T=T, N=N, HAS_H0=h0 is not None, **flags, **tile)
    return d_bias_parts.sum(0) if d_bias_parts is not None else None


class _TimeLastFunction(torch.autograd.Function):
    """The eager autograd path (ops.py traces the custom op under torch.compile instead), as `hlru_scan`'s: the same
    kernels without the op's dispatch layers. Those are a small part of an eager call's host time: a forward+backward
    at B8 T2048 D768 took 405 us of wall this way and 417 us through the op on the H200's host, against 133 us for
    the kernels called directly; the rest is the autograd engine's ~0.3 ms per backward()
    (bench_results/probes_2026-11-30j/host_overhead.txt)."""

    @staticmethod
    def forward(ctx, gates, values, initial_state, gate_activation, want_final, starts, gate_bias, window):
        states, final = time_last_forward(gates, values, initial_state, gate_activation, want_final, starts, gate_bias,
                                          window)
        ctx.save_for_backward(gates, values, states, initial_state, starts, gate_bias)
        ctx.gate_activation, ctx.window = gate_activation, window
        ctx.set_materialize_grads(False)
        return states, final

    @staticmethod
    def backward(ctx, d_states, d_final):
        gates, values, states, initial_state, starts, gate_bias = ctx.saved_tensors
        if d_states is None and d_final is None:
            return None, None, None, None, None, None, None, None
        if d_states is None:
            d_states = torch.zeros_like(states)
        d_gates, d_values, d_h0, d_bias = time_last_backward(gates, values, states, initial_state, d_states, d_final,
                                                             ctx.gate_activation, starts, gate_bias, ctx.window)
        needs = ctx.needs_input_grad
        return (d_gates if needs[0] else None, d_values if needs[1] else None,
                d_h0.to(initial_state.dtype) if needs[2] else None, None, None, None,
                d_bias.to(gate_bias.dtype) if needs[6] else None, None)


def time_last_scan(gates: torch.Tensor, values: torch.Tensor, initial_state: Optional[torch.Tensor],
                   gate_activation: str, want_final: bool, starts: Optional[torch.Tensor] = None,
                   gate_bias: Optional[torch.Tensor] = None, window: bool = False
                   ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """`time_last_forward` with its gradient in eager mode (arguments unchecked: ops.hlru_scan_time_last and
    ops.bdlru_scan_time_last check them); without gradients to track, the forward kernel alone."""
    if not _tracks_gradients(gates, values, initial_state, gate_bias):
        return time_last_forward(gates, values, initial_state, gate_activation, want_final, starts, gate_bias, window)
    return _TimeLastFunction.apply(gates, values, initial_state, gate_activation, want_final, starts, gate_bias,
                                   window)


__all__ = ["TILE", "time_last_backward", "time_last_forward", "time_last_scan"]
