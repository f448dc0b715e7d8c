"""Reads run.sh's ncu CSVs (one per case, `--page raw`) and prints, per kernel: time, DRAM throughput (% of peak) and
bytes, achieved occupancy, issue-slot use, eligible warps per cycle, registers, grid, waves, and the four largest
stall reasons (warps stalled per issued instruction). Writes profile.json beside them.

    python3 summarise.py OUT
"""

import csv
import glob
import json
import os
import sys

STALL = "smsp__average_warps_issue_stalled_"


def rows_of(path):
    with open(path) as f:
        lines = f.read().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith('"ID"')), None)
    if start is None:
        return []
    table = list(csv.reader(lines[start:]))
    header, body = table[0], table[2:]  # table[1] holds the units
    return [dict(zip(header, row)) for row in body if len(row) == len(header)]


def number(text):
    try:
        return float(text.replace(",", ""))
    except (ValueError, AttributeError):
        return None


def main():
    folder = sys.argv[1]
    summary = []
    for path in sorted(glob.glob(os.path.join(folder, "*.csv"))):
        case = os.path.basename(path)[:-4]
        print(f"\n{case}")
        for row in rows_of(path):
            name = row.get("Kernel Name", "?").split("(")[0]
            values = {k: number(v) for k, v in row.items()}
            stalls = sorted(((k[len(STALL):].replace("_per_issue_active.ratio", ""), v) for k, v in values.items()
                             if k.startswith(STALL) and v), key=lambda kv: -kv[1])
            item = dict(case=case, kernel=name, us=(values.get("gpu__time_duration.sum") or 0) / 1e3,
                        dram_pct=values.get("dram__throughput.avg.pct_of_peak_sustained_elapsed"),
                        dram_MB=((values.get("dram__bytes_read.sum") or 0) + (values.get("dram__bytes_write.sum")
                                                                              or 0)) / 1e6,
                        occupancy_pct=values.get("sm__warps_active.avg.pct_of_peak_sustained_active"),
                        issue_pct=values.get("smsp__issue_active.avg.pct_of_peak_sustained_active"),
                        eligible=values.get("smsp__warps_eligible.avg.per_cycle_active"),
                        l1_pct=values.get("l1tex__throughput.avg.pct_of_peak_sustained_active"),
                        registers=values.get("launch__registers_per_thread"), grid=values.get("launch__grid_size"),
                        block=values.get("launch__block_size"), waves=values.get("launch__waves_per_multiprocessor"),
                        smem=values.get("launch__shared_mem_per_block_dynamic"), stalls=dict(stalls[:6]))
            summary.append(item)
            if item["us"] < 3:  # torch's small fills and casts
                continue
            top = ", ".join(f"{k} {v:.1f}" for k, v in stalls[:4])
            print(f"  {name[:44]:44} {item['us']:8.1f} us  DRAM {item['dram_pct'] or 0:5.1f} % {item['dram_MB']:7.1f} MB"
                  f"  occ {item['occupancy_pct'] or 0:5.1f} %  issue {item['issue_pct'] or 0:5.1f} %  elig "
                  f"{item['eligible'] or 0:4.2f}  L1 {item['l1_pct'] or 0:5.1f} %  regs {item['registers'] or 0:.0f}"
                  f"  grid {item['grid'] or 0:.0f}x{item['block'] or 0:.0f}  waves {item['waves'] or 0:.2f}"
                  f"\n      stalls/issue: {top}")
    with open(os.path.join(folder, "profile.json"), "w") as f:
        json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
