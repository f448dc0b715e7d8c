"""Language models side by side: H-LRU / BD-LRU against transformers' Llama and Mamba on the same data, tokenizer,
token budget and learning-rate sweep. One `scripts/train.py` run per (model, lr), one at a time by default so
the training times are those of a model alone on the device. Resumable: run the same command again to
continue; finished runs are skipped, unfinished ones resume from their newest checkpoint.

    python scripts/lm_compare.py --output_dir runs/lm-compare \
        --model hlru:order=1 --model hlru:order=2 --model bdlru:block_size=4 --model llama \
        --model mamba:num_hidden_layers=12,use_mambapy=true \
        --config_overrides hidden_size=512,num_hidden_layers=6 --learning_rates 1e-3,3e-3 \
        --extra_args "--max_steps 300 --per_device_train_batch_size 32 --block_size 512 --mixed_precision bf16"

Data flags (`--train_file`, `--dataset_name`, ...) go in --extra_args; without them every run trains on the
embedded Shakespeare corpus. Writes OUTPUT_DIR/lm_compare.md, lm_compare.json and lm_compare.png.
"""

import argparse
import json
import os
import shlex

from hf_lrnn.training.lm_compare import LMRun, best_runs, format_table, plot_curves
from hf_lrnn.training.runner import GPUUtilization, add_runner_arguments, check_runner_arguments, run_jobs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True,
                   help="hlru, bdlru, llama or mamba, optionally with ':k=v,...' config fields; repeatable")
    p.add_argument("--config_overrides", default="", help="config fields every model gets (a model's own win)")
    p.add_argument("--learning_rates", type=lambda s: tuple(float(x) for x in s.split(",")), default=(1e-3, 3e-3))
    p.add_argument("--output_dir", required=True)
    p.add_argument("--reference", default="llama", help="the model whose tokens/s the others are divided by")
    add_runner_arguments(p, parallel_help="runs at once (>1 shares the device: times are not alone)",
                         report_help="train nothing: report the runs in --output_dir")
    args = p.parse_args(argv)
    check_runner_arguments(p, args)

    try:
        runs = LMRun.plan(args.model, args.learning_rates, args.config_overrides)
    except ValueError as error:
        p.error(str(error))
    data_cache = os.path.join(args.output_dir, "data_cache")
    extra = shlex.split(args.extra_args)
    with GPUUtilization() as gpu:
        outcome = run_jobs([] if args.report_only else runs, lambda r: r.command(args.output_dir, data_cache, extra),
                           lambda r: r.run_dir(args.output_dir), args.parallel,
                           None if args.time_budget_minutes is None else 60 * args.time_budget_minutes,
                           env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})

    best, finished = best_runs(runs, args.output_dir)
    header = (f"{len(finished)}/{len(runs)} runs finished; lr sweep {', '.join(f'{lr:g}' for lr in args.learning_rates)};"
              f" shared config: {args.config_overrides or '-'}; train.py {args.extra_args or '(defaults)'}")
    table = format_table(best, finished, args.learning_rates, args.reference)
    print(header + "\n\n" + table)
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "lm_compare.md"), "w") as f:
        f.write(header + "\n\n" + table + "\n")
    summary = {"config_overrides": args.config_overrides, "extra_args": args.extra_args,
               "learning_rates": args.learning_rates,
               "best": {name: {k: v for k, v in s.items() if k != "train_curve"} for name, s in best.items()},
               "runs": [{k: v for k, v in s.items() if k not in ("curve", "train_curve")} for s in finished]}
    if not args.report_only:
        summary["this_call"] = {"finished": len(outcome["finished"]), "interrupted": len(outcome["interrupted"]),
                                "failed": len(outcome["failed"]), "wall_s": outcome["wall_s"], **gpu.summary()}
    with open(os.path.join(args.output_dir, "lm_compare.json"), "w") as f:
        json.dump(summary, f, indent=1)
    if best:
        plot_curves(best, os.path.join(args.output_dir, "lm_compare.png"), title=args.config_overrides)
    if not args.report_only and outcome["failed"]:
        raise SystemExit(f"{len(outcome['failed'])} run(s) failed; see their train.log")


if __name__ == "__main__":
    main()
