"""Multi-GPU scaling report over finished `scripts/train.py` runs: a table of throughput (per GPU, speedup and
scaling efficiency against a one-GPU run) and final validation loss, and the loss curves overlaid.

    python scripts/scaling_report.py --run 1gpu=runs/one --run ddp2=runs/ddp --run fsdp2=runs/fsdp \
        --baseline 1gpu --output_dir runs/scaling

Writes OUTPUT_DIR/scaling.md, scaling.json and scaling.png.
"""

import argparse
import json
import os

from hf_lrnn.training.scaling import format_scaling_table, plot_scaling, scaling_rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="append", required=True, help="LABEL=FOLDER of a finished run; repeatable")
    p.add_argument("--baseline", default=None, help="the label of the one-GPU run (default: the first --run)")
    p.add_argument("--title", default="")
    p.add_argument("--output_dir", required=True)
    args = p.parse_args(argv)
    runs = {}
    for text in args.run:
        label, sep, folder = text.partition("=")
        if not sep or not label or not folder:
            p.error(f"--run {text!r}: expected LABEL=FOLDER")
        runs[label] = folder
    baseline = args.baseline or next(iter(runs))
    try:
        rows = scaling_rows(runs, baseline)
    except ValueError as error:
        p.error(str(error))
    table = format_scaling_table(rows, baseline)
    print(table)
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "scaling.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(args.output_dir, "scaling.json"), "w") as f:
        json.dump({"baseline": baseline, "runs": runs, "rows": rows}, f, indent=1)
    plot_scaling(rows, os.path.join(args.output_dir, "scaling.png"), args.title)


if __name__ == "__main__":
    main()
