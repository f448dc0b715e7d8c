"""BD-LRU block size 2 time-last composed in threads (grids that are not small): the compiler's registers against
register caps that spill nothing (`maxnreg`; registers.py: the backward holds 142 and spills from 104 down, the
forward 188 and compiles to 163 at 168, spilling from 152 down); bf16, CUDA-graph timing, bench_scan.py's byte
model, each mode's outputs and gradients against the first's (probe_bd2_segments.py's loop, `run`).

    PYTHONPATH=. python3 bench_results/probes_2026-12-02d/probe_bd2_caps.py --out OUT/bd2_caps.json
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "probes_2026-12-02c"))

import probe_bd2_segments  # noqa: E402
from hf_lrnn import scan_time_last  # noqa: E402

SHAPES = [(8, 4096, 1024), (8, 2048, 768), (32, 2048, 2048), (4, 4096, 1024), (16, 4096, 1024)]
# mode: (forward maxnreg, backward maxnreg); None: the compiler's
MODES = {"compiler": (None, None), "bwd 128": (None, 128), "bwd 120": (None, 120), "bwd 112": (None, 112),
         "fwd 168": (168, None), "fwd 168 bwd 112": (168, 112)}
GRID = scan_time_last._grid


def capped_grid(*args, **kwargs):
    """scan_time_last._grid with the caps of the mode that run() last set (scan_time_last._PROBE_CAPS, its name) on
    launches of whole rows (not the segments of small grids)."""
    grid, options = GRID(*args, **kwargs)
    cap = MODES[scan_time_last._PROBE_CAPS][1 if kwargs.get("backward") else 0]
    if cap is not None and options.get("SEGMENTS", 1) == 1:
        options["maxnreg"] = cap
    return grid, options


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bd2_caps.json")
    ap.add_argument("--shapes", default=None, help="B,T,D;B,T,D... (default: SHAPES)")
    args = ap.parse_args()
    shapes = SHAPES if args.shapes is None else [tuple(int(x) for x in s.split(",")) for s in args.shapes.split(";")]
    scan_time_last._grid = capped_grid
    # run() sets scan_time_last.<switch> to each mode's first value: here the mode's name, which capped_grid reads
    probe_bd2_segments.run(2, "_PROBE_CAPS", shapes, {name: (name, None) for name in MODES}, args.out)


if __name__ == "__main__":
    main()
