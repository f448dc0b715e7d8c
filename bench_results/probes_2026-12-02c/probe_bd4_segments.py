"""BD-LRU block size 4 time-last: whole rows, one warp each (BD4_SEGMENTS off; the library's default until the
seventeenth session), against segments of a row by the rule (BD4_WARPS_PER_SM) and against 2, 4 and 8 runs fixed
(M2_SEGMENTS), forward and the adjoint scan alike; bf16, CUDA-graph timing, bench_scan.py's byte model, each mode's
outputs and gradients against the first's (the timing loop of probe_bd2_segments.py). Written in the sixteenth
session, run in the seventeenth (bench_results/probes_2026-12-02d/bd4_segments.txt).

    PYTHONPATH=. python3 bench_results/probes_2026-12-02c/probe_bd4_segments.py --out OUT/bd4_segments.json
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from probe_bd2_segments import run  # noqa: E402

SHAPES = [(1, 16384, 1024), (2, 8192, 1024), (1, 65536, 1024), (4, 4096, 1024), (8, 4096, 1024)]
# mode: (BD4_SEGMENTS, M2_SEGMENTS)
MODES = {"rows": (False, None), "segments": (True, None), "segments-2": (True, 2), "segments-4": (True, 4),
         "segments-8": (True, 8)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bd4_segments.json")
    run(4, "BD4_SEGMENTS", SHAPES, MODES, ap.parse_args().out)


if __name__ == "__main__":
    main()
