"""The MAD benchmark for H-LRU / BD-LRU models: every task and difficulty variant, the lr x weight-decay sweep,
best final test accuracy per setting, the MAD score per task and overall (macro accuracy, as published, and
micro). Resumable: run the same command again to continue; finished runs are skipped.

    python scripts/mad.py --model hlru:order=2 --model bdlru:block_size=4 --output_dir runs/mad \
        --parallel 12 --mixed_precision bf16                        # the full protocol (200 epochs)
    python scripts/mad.py --model bdlru:block_size=2 --output_dir runs/mad-small \
        --variants baseline --num_epochs 10 --learning_rates 1e-3 --weight_decays 0 --time_budget_minutes 8

Writes OUTPUT_DIR/mad_scores.json, mad_scores.md and mad_scores.png (with the budget used) after every call.
"""

import argparse
import json
import os

from hf_lrnn.training.mad import METRICS, ModelSpec, format_table, mad_scores, plan_jobs, plot_scores, read_result
from hf_lrnn.training.runner import GPUUtilization, add_runner_arguments, check_runner_arguments, run_jobs, train_command
from hf_lrnn.training.tasks import MAD_TASKS, build_task


def floats(text):
    return tuple(float(x) for x in text.split(","))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True, help="hlru[:k=v,...] or bdlru[:k=v,...]; repeatable")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--tasks", default=",".join(MAD_TASKS), help="comma-separated subset of the six MAD tasks")
    p.add_argument("--variants", default="all", choices=["all", "baseline"])
    p.add_argument("--learning_rates", type=floats, default=(1e-4, 5e-4, 1e-3))
    p.add_argument("--weight_decays", type=floats, default=(0.0, 0.1))
    p.add_argument("--num_epochs", type=float, default=200)
    p.add_argument("--per_device_train_batch_size", type=int, default=128)
    p.add_argument("--stop_at_accuracy", type=float, default=0.999,
                   help="end a run early once its test accuracy reaches this (MAD's stopping threshold; 0 = never)")
    p.add_argument("--mixed_precision", default="no", choices=["no", "bf16", "fp16"])
    add_runner_arguments(p, parallel_help="training processes at once (on one GPU: 8-16)",
                         report_help="train nothing: score the runs already in --output_dir")
    args = p.parse_args(argv)
    check_runner_arguments(p, args)

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = sorted(set(tasks) - set(MAD_TASKS))
    if unknown:
        p.error(f"--tasks: unknown task(s) {unknown}; MAD tasks are {list(MAD_TASKS)}")
    models = [ModelSpec.parse(m) for m in args.model]
    jobs = plan_jobs(models, tasks, args.variants, args.learning_rates, args.weight_decays)
    data_cache = os.path.join(args.output_dir, "data_cache")
    for task, options in sorted({(j.task, j.task_options) for j in jobs if not args.report_only}):
        build_task(task, seed=12345, cache_dir=data_cache, **dict(options))  # generate each dataset once

    def command(job):
        early_stop = ["--stop_at_accuracy", str(args.stop_at_accuracy)] if args.stop_at_accuracy > 0 else []
        return train_command(job, args.output_dir, data_cache, args.num_epochs, args.per_device_train_batch_size,
                             args.mixed_precision, [*early_stop, *args.extra_args.split()])

    budget = {"num_epochs": args.num_epochs, "variants": args.variants, "learning_rates": args.learning_rates,
              "weight_decays": args.weight_decays, "batch_size": args.per_device_train_batch_size,
              "stop_at_accuracy": args.stop_at_accuracy, "mixed_precision": args.mixed_precision}
    print(f"{len(jobs)} runs: {len(models)} model(s) x {len(tasks)} task(s) x variants={args.variants} x "
          f"{len(args.learning_rates)} lr x {len(args.weight_decays)} wd; budget {budget}")
    with GPUUtilization() as gpu:
        outcome = run_jobs([] if args.report_only else jobs, command, lambda j: j.run_dir(args.output_dir),
                           args.parallel, None if args.time_budget_minutes is None else 60 * args.time_budget_minutes,
                           env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    results = [read_result(j, args.output_dir) for j in jobs]
    done = sum(r is not None for r in results)
    summary = {"budget": budget, "runs_total": len(jobs), "runs_finished": done,
               "scores": {metric: mad_scores(jobs, results, metric) for metric in METRICS}}
    if not args.report_only:
        summary["this_call"] = {"finished": len(outcome["finished"]), "interrupted": len(outcome["interrupted"]),
                                "failed": len(outcome["failed"]), "wall_s": outcome["wall_s"], **gpu.summary()}
        finished_now = [read_result(j, args.output_dir) for j in outcome["finished"]]
        if finished_now and outcome["wall_s"] > 0:
            summary["this_call"]["train_steps_per_s_total"] = sum(r["steps"] for r in finished_now) / outcome["wall_s"]
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "mad_scores.json"), "w") as f:
        json.dump(summary, f, indent=1)
    lines = [f"MAD scores (x100; * = not every run of the task finished yet). Budget: {budget}. "
             f"{done}/{len(jobs)} runs finished."]
    for metric in METRICS:
        lines += ["", f"{metric} ({'MAD published metric' if metric == 'macro_accuracy' else 'plain token accuracy'}):",
                  format_table(summary["scores"][metric], tasks)]
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(args.output_dir, "mad_scores.md"), "w") as f:
        f.write(text + "\n")
    plot_scores(summary["scores"]["macro_accuracy"], tasks, os.path.join(args.output_dir, "mad_scores.png"),
                title=f"MAD (macro accuracy), {args.num_epochs:g} epochs, variants={args.variants}")
    if outcome["failed"]:
        raise SystemExit(f"{len(outcome['failed'])} run(s) failed; see their train.log")


if __name__ == "__main__":
    main()
