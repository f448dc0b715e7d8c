"""State tracking across models: group word problems (and parity / modular arithmetic), trained at one length
and evaluated at longer ones. For every (model, problem) the best run of the learning-rate sweep (by mean
test accuracy over lengths) is kept; prints accuracy against length, writes JSON, markdown and a PNG.
Resumable like scripts/mad.py: run the same command again to continue.

    python scripts/state_tracking.py --model bdlru:block_size=4 --model hlru:order=4 \
        --problem group=S3 --problem group=S5 --problem group=Z60 --output_dir runs/state \
        --num_epochs 20 --parallel 12 --mixed_precision bf16
"""

import argparse
import json
import math
import os

from hf_lrnn.training.mad import Job, ModelSpec, read_result
from hf_lrnn.training.models import parse_key_values
from hf_lrnn.training.runner import GPUUtilization, run_jobs, train_command
from hf_lrnn.training.tasks import build_task


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True, help="hlru[:k=v,...] or bdlru[:k=v,...]; repeatable")
    p.add_argument("--task", default="state_tracking", choices=["state_tracking", "parity", "modular_arithmetic"])
    p.add_argument("--problem", action="append", default=None,
                   help='task options of one problem, e.g. "group=S5"; repeatable (default: the task defaults)')
    p.add_argument("--output_dir", required=True)
    p.add_argument("--learning_rates", type=lambda s: tuple(map(float, s.split(","))), default=(1e-3, 3e-3))
    p.add_argument("--weight_decay", type=float, default=0.0)
    p.add_argument("--num_epochs", type=float, default=20)
    p.add_argument("--per_device_train_batch_size", type=int, default=128)
    p.add_argument("--mixed_precision", default="no", choices=["no", "bf16", "fp16"])
    p.add_argument("--parallel", type=int, default=1)
    p.add_argument("--time_budget_minutes", type=float, default=None)
    p.add_argument("--report_only", action="store_true", help="train nothing: report the runs already in --output_dir")
    p.add_argument("--extra_args", default="", help="more scripts/train.py arguments for every run")
    args = p.parse_args(argv)

    models = [ModelSpec.parse(m) for m in args.model]
    problems = args.problem or [""]
    jobs = [Job(model, args.task, problem or "default", tuple(sorted(parse_key_values(problem, "--problem").items())),
                lr, args.weight_decay)
            for lr in args.learning_rates for model in models for problem in problems]  # sweep outermost
    data_cache = os.path.join(args.output_dir, "data_cache")
    for options in sorted({j.task_options for j in jobs if not args.report_only}):
        build_task(args.task, seed=12345, cache_dir=data_cache, **dict(options))

    def command(job):
        return train_command(job, args.output_dir, data_cache, args.num_epochs, args.per_device_train_batch_size,
                             args.mixed_precision, args.extra_args.split())

    with GPUUtilization() as gpu:
        outcome = run_jobs([] if args.report_only else jobs, command, lambda j: j.run_dir(args.output_dir), args.parallel,
                           None if args.time_budget_minutes is None else 60 * args.time_budget_minutes,
                           env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})

    best = {}  # (model label, problem) -> (mean accuracy, job, result)
    for job in jobs:
        result = read_result(job, args.output_dir)
        if result is None:
            continue
        mean = sum(r["accuracy"] for r in result["final"].values()) / len(result["final"])
        key = (job.model.label, job.variant)
        if key not in best or mean > best[key][0]:
            best[key] = (mean, job, result)
    splits = sorted({s for _, _, r in best.values() for s in r["final"]}, key=lambda s: int(s.split("_")[-1]))
    lines = [f"{args.task}: token accuracy of the best lr per row (lr in {args.learning_rates}, {args.num_epochs:g} epochs); "
             f"{sum(read_result(j, args.output_dir) is not None for j in jobs)}/{len(jobs)} runs finished",
             "", "| model | problem | lr | " + " | ".join(splits) + " | seq. acc. @ longest |",
             "|" + "---|" * (len(splits) + 4)]
    rows = []
    for (label, problem), (_, job, result) in sorted(best.items()):
        cells = [f"{100 * result['final'][s]['accuracy']:.1f}" if s in result["final"] else "-" for s in splits]
        longest = result["final"].get(splits[-1], {}).get("sequence_accuracy", math.nan)
        lines.append(f"| {label} | {problem} | {job.learning_rate:g} | " + " | ".join(cells) + f" | {100 * longest:.1f} |")
        rows.append({"model": label, "problem": problem, "learning_rate": job.learning_rate, "steps": result["steps"],
                     "accuracy": {s: result["final"][s]["accuracy"] for s in result["final"]},
                     "sequence_accuracy": {s: result["final"][s]["sequence_accuracy"] for s in result["final"]}})
    text = "\n".join(lines)
    print(text)
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "state_tracking.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(args.output_dir, "state_tracking.json"), "w") as f:
        summary = {"task": args.task, "rows": rows}
        if not args.report_only:
            summary["this_call"] = {"finished": len(outcome["finished"]), "interrupted": len(outcome["interrupted"]),
                                    "failed": len(outcome["failed"]), "wall_s": outcome["wall_s"], **gpu.summary()}
        json.dump(summary, f, indent=1)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problems_seen = sorted({r["problem"] for r in rows})
    fig, axes = plt.subplots(1, max(1, len(problems_seen)), figsize=(3.4 * max(1, len(problems_seen)) + 2.2, 3.4),
                             squeeze=False)
    for ax, problem in zip(axes[0], problems_seen):
        for i, row in enumerate(r for r in rows if r["problem"] == problem):
            lengths = [int(s.split("_")[-1]) for s in row["accuracy"]]
            ax.plot(lengths, [100 * v for v in row["accuracy"].values()], "o-" if "bdlru" in row["model"] else "s--",
                    ms=3, color=f"C{i}", label=row["model"])
        ax.set_xscale("log", base=2)
        ax.set_xticks(lengths, [str(n) for n in lengths])
        ax.minorticks_off()
        ax.set(title=problem, xlabel="sequence length", ylim=(0, 102))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("token accuracy (%)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=7)
    fig.tight_layout(rect=(0, 0, 1 - 2.2 / fig.get_figwidth(), 1))
    fig.savefig(os.path.join(args.output_dir, "state_tracking.png"), dpi=110)
    plt.close(fig)
    if outcome["failed"]:
        raise SystemExit(f"{len(outcome['failed'])} run(s) failed; see their train.log")


if __name__ == "__main__":
    main()
