"""Train an H-LRU or BD-LRU model on a synthetic task with Accelerate (one process or several).

    python scripts/train.py --task selective_copying --model_type bdlru --config_overrides "block_size=4" \
        --output_dir runs/sc-bdlru4 --num_epochs 20 --mixed_precision bf16
    torchrun --nproc_per_node 2 scripts/train.py ...          # or: accelerate launch --num_processes 2 ...

Tasks (`--task`, options with `--task_options "vocab_size=32,seq_len=256"`): in_context_recall,
fuzzy_in_context_recall, noisy_in_context_recall, selective_copying, compression, memorization
(the MAD suite), state_tracking (`group=S5`, `train_length=16`, `test_lengths=16:32:64:128`), parity,
modular_arithmetic. Labels are aligned with the outputs (-100 = not scored); compression trains the
auto-encoder head (`AutoModelForCompression`), every other task the causal-LM model.

Writes into --output_dir: metrics.jsonl (one JSON object per log / eval), checkpoints/step_N/ (accelerate
state, atomic), the final model (save_pretrained: loads with the Auto classes), results.json and
training_curves.png. `--resume_from_checkpoint latest|PATH` continues exactly where a run stopped (same
batches, same weights as an uninterrupted run); SIGTERM / Ctrl-C save a checkpoint before exiting.
"""

import argparse
import json
import math
import os
import signal
import time

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, get_scheduler

import hf_lrnn
from hf_lrnn.training.batches import ShardedBatches
from hf_lrnn.training.checkpoints import latest_checkpoint, load_checkpoint, save_checkpoint
from hf_lrnn.training.metrics import TokenAccuracy, masked_cross_entropy
from hf_lrnn.training.models import build_config
from hf_lrnn.training.plots import plot_training_curves, read_jsonl
from hf_lrnn.training.tasks import TASKS, build_task, check_no_leakage, parse_task_options


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="in_context_recall", choices=TASKS)
    p.add_argument("--task_options", default="", help='e.g. "vocab_size=32,seq_len=256" or "group=S5"')
    p.add_argument("--data_seed", type=int, default=12345, help="seed of the task generator (MAD: 12345)")
    p.add_argument("--data_cache_dir", default=None, help="cache generated tasks here (datasets.save_to_disk)")
    p.add_argument("--model_type", default="bdlru", choices=["hlru", "bdlru"])
    p.add_argument("--config_overrides", default="", help='e.g. "order=2,num_channels=64" (defaults: d=128, 2 blocks)')
    p.add_argument("--output_dir", required=True)
    p.add_argument("--max_steps", type=int, default=None, help="optimizer steps; overrides --num_epochs")
    p.add_argument("--num_epochs", type=float, default=200, help="passes over the training set (MAD: 200)")
    p.add_argument("--per_device_train_batch_size", type=int, default=128)
    p.add_argument("--per_device_eval_batch_size", type=int, default=None, help="default: the train batch size")
    p.add_argument("--gradient_accumulation_steps", type=int, default=1)
    p.add_argument("--learning_rate", type=float, default=5e-4)
    p.add_argument("--weight_decay", type=float, default=0.0)
    p.add_argument("--adam_beta1", type=float, default=0.9)
    p.add_argument("--adam_beta2", type=float, default=0.98)
    p.add_argument("--max_grad_norm", type=float, default=1.0, help="0 disables clipping")
    p.add_argument("--lr_scheduler_type", default="cosine_with_min_lr",
                   help="any transformers scheduler name (MAD: cosine to --min_lr)")
    p.add_argument("--min_lr", type=float, default=1e-6, help="floor of cosine_with_min_lr")
    p.add_argument("--warmup_steps", type=int, default=0)
    p.add_argument("--seed", type=int, default=0, help="seed of the model init and the data order")
    p.add_argument("--mixed_precision", default="no", choices=["no", "bf16", "fp16"])
    p.add_argument("--logging_steps", type=int, default=10)
    p.add_argument("--eval_steps", type=int, default=None, help="evaluate every N steps (default: once per epoch)")
    p.add_argument("--checkpointing_steps", type=int, default=None, help="save a resumable checkpoint every N steps")
    p.add_argument("--checkpoints_total_limit", type=int, default=2, help="keep the newest N checkpoints (0 = all)")
    p.add_argument("--resume_from_checkpoint", default=None, help="'latest' or a checkpoints/step_N folder")
    p.add_argument("--report_to", default="none", help="none, all, tensorboard, wandb, ... (accelerate trackers)")
    p.add_argument("--stop_at_accuracy", type=float, default=None,
                   help="end training once every test split's macro accuracy reaches this (MAD uses 0.999)")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even if a GPU is present")
    p.add_argument("--no_plot", action="store_true")
    args = p.parse_args(argv)
    for name in ("per_device_train_batch_size", "gradient_accumulation_steps", "logging_steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    for name in ("max_steps", "eval_steps", "checkpointing_steps", "per_device_eval_batch_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.num_epochs <= 0:
        p.error(f"--num_epochs must be > 0, got {args.num_epochs}")
    return args


def build_model(task, args):
    config = build_config(args.model_type, task.vocab_size, args.config_overrides)
    auto_class = hf_lrnn.AutoModelForCompression if task.head == "compression" else AutoModelForCausalLM
    return auto_class.from_config(config)


@torch.no_grad()
def evaluate(model, task, accelerator, batch_size):
    """Token (micro / macro), sequence accuracy and loss of every test split, each process a shard."""
    model.eval()
    results = {}
    for split, dataset in task.test.items():
        meter = TokenAccuracy(task.vocab_size)
        shard = dataset.with_format("torch", columns=["input_ids", "labels"])[
            accelerator.process_index :: accelerator.num_processes]  # {"input_ids": [n, T], "labels": [n, T]}
        for start in range(0, len(shard["labels"]), batch_size):
            input_ids, labels = (shard[k][start : start + batch_size].to(accelerator.device) for k in ("input_ids", "labels"))
            with accelerator.autocast():
                logits = model(input_ids=input_ids).logits
            meter.update(logits, labels)
        counts = accelerator.reduce(meter.counts().to(accelerator.device), reduction="sum").cpu()
        results[split] = TokenAccuracy.from_counts(counts, task.vocab_size).compute()
    model.train()
    return results


def main(argv=None):
    args = parse_args(argv)
    accelerator = Accelerator(mixed_precision=args.mixed_precision, cpu=args.cpu,
                              log_with=None if args.report_to == "none" else args.report_to,
                              project_dir=args.output_dir)
    set_seed(args.seed)
    with accelerator.main_process_first():  # the first process fills the data cache, the others read it
        task = build_task(args.task, seed=args.data_seed, cache_dir=args.data_cache_dir,
                          **parse_task_options(args.task, args.task_options))
    check_no_leakage(task)
    model = build_model(task, args)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "norm" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "norm" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2))
    batches = ShardedBatches(task.train, args.per_device_train_batch_size, args.seed,
                             accelerator.num_processes, accelerator.process_index, accelerator.device)
    steps_per_epoch = max(1, batches.batches_per_epoch // args.gradient_accumulation_steps)
    max_steps = args.max_steps or math.ceil(args.num_epochs * steps_per_epoch)
    eval_steps = args.eval_steps or steps_per_epoch
    scheduler = get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=args.warmup_steps,
                              num_training_steps=max_steps,
                              scheduler_specific_kwargs={"min_lr": args.min_lr} if "min_lr" in args.lr_scheduler_type else None)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)  # not prepared: it steps once per optimizer step

    os.makedirs(args.output_dir, exist_ok=True)
    checkpoints_dir = os.path.join(args.output_dir, "checkpoints")
    metrics_path = os.path.join(args.output_dir, "metrics.jsonl")
    step, elapsed_before, best = 0, 0.0, {}
    if args.resume_from_checkpoint:
        path = (latest_checkpoint(checkpoints_dir) if args.resume_from_checkpoint == "latest"
                else args.resume_from_checkpoint)
        if path is not None:
            state = load_checkpoint(accelerator, path)
            step, elapsed_before, best = state["step"], state["elapsed_s"], state["best"]
            accelerator.print(f"resumed from {path} at step {step}")
    if accelerator.is_main_process:  # keep the log of the steps before `step` (all of it for a fresh run: none)
        kept = [r for r in read_jsonl(metrics_path) if r["step"] <= step] if step and os.path.exists(metrics_path) else []
        with open(metrics_path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)
    if args.report_to != "none":
        accelerator.init_trackers("hf_lrnn", config={k: v for k, v in vars(args).items() if v is not None})

    def log(record):
        if accelerator.is_main_process:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")
        if args.report_to != "none":
            accelerator.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=record["step"])

    def checkpoint():
        save_checkpoint(accelerator, checkpoints_dir, step,
                        {"step": step, "elapsed_s": elapsed_before + time.perf_counter() - start_time, "best": best},
                        keep_last=args.checkpoints_total_limit)

    stop = {"requested": False}
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.update(requested=True))

    n_params = sum(p.numel() for p in model.parameters())
    accelerator.print(f"{args.task} {task.options} | {args.model_type} {n_params:,} parameters | "
                      f"{max_steps} steps x {args.per_device_train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps} sequences")
    first_batch_indices = batches.indices(step * args.gradient_accumulation_steps).tolist()
    model.train()
    loss_sum, loss_steps = torch.zeros((), device=accelerator.device), 0
    start_time = last_log_time = time.perf_counter()
    progress = tqdm(total=max_steps, initial=step, desc="train", disable=not accelerator.is_local_main_process,
                    mininterval=2.0)
    while step < max_steps:
        for micro in range(args.gradient_accumulation_steps):
            batch = batches.batch(step * args.gradient_accumulation_steps + micro)
            sync = micro == args.gradient_accumulation_steps - 1
            with accelerator.no_sync(model) if not sync else torch.enable_grad(), accelerator.autocast():
                loss = masked_cross_entropy(model(input_ids=batch["input_ids"]).logits, batch["labels"])
                accelerator.backward(loss / args.gradient_accumulation_steps)
            loss_sum += loss.detach() / args.gradient_accumulation_steps
        if args.max_grad_norm > 0:
            accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        loss_steps += 1
        progress.update(1)

        if step % args.logging_steps == 0 or step == max_steps:
            mean_loss = accelerator.reduce(loss_sum, reduction="mean").item() / loss_steps
            now = time.perf_counter()
            log({"kind": "train", "step": step, "epoch": step / steps_per_epoch, "loss": mean_loss,
                 "lr": scheduler.get_last_lr()[0], "steps_per_s": loss_steps / (now - last_log_time)})
            progress.set_postfix(loss=f"{mean_loss:.4f}", refresh=False)
            loss_sum.zero_()
            loss_steps, last_log_time = 0, now
            flag = accelerator.reduce(torch.tensor(float(stop["requested"]), device=accelerator.device), "sum")
            stop["requested"] = bool(flag.item() > 0)
        if step % eval_steps == 0 or step == max_steps:
            reached = True
            for split, metrics in evaluate(model, task, accelerator, args.per_device_eval_batch_size
                                           or args.per_device_train_batch_size).items():
                log({"kind": "eval", "step": step, "split": split, **metrics})
                if metrics["accuracy"] >= best.get(split, {}).get("accuracy", -1.0):
                    best[split] = {"step": step, **metrics}
                if args.stop_at_accuracy is not None and metrics["macro_accuracy"] < args.stop_at_accuracy:
                    reached = False
            if args.stop_at_accuracy is not None and reached:
                accelerator.print(f"test accuracy reached {args.stop_at_accuracy} at step {step}: stopping early")
                max_steps = step
        if (args.checkpointing_steps and step % args.checkpointing_steps == 0) or stop["requested"]:
            checkpoint()
        if stop["requested"]:
            accelerator.print(f"stopped at step {step}: resume with --resume_from_checkpoint latest")
            progress.close()
            accelerator.end_training()
            raise SystemExit(143)
    progress.close()

    # the final model, its results and a plot
    elapsed = elapsed_before + time.perf_counter() - start_time
    final = {r["split"]: r for r in read_jsonl(metrics_path) if r["kind"] == "eval" and r["step"] == step} \
        if accelerator.is_main_process else {}
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.save_pretrained(args.output_dir, is_main_process=accelerator.is_main_process,
                              save_function=accelerator.save, state_dict=accelerator.get_state_dict(model))
    checksum = torch.tensor([sum(p.double().sum().item() for p in unwrapped.parameters())], device=accelerator.device)
    checksums = accelerator.gather(checksum).tolist()
    data_indices = accelerator.gather(torch.tensor(first_batch_indices, device=accelerator.device)).view(
        accelerator.num_processes, -1).tolist()
    if accelerator.is_main_process:
        results = {
            "task": args.task, "task_options": task.options, "model_type": args.model_type,
            "config": unwrapped.config.to_diff_dict(), "parameters": n_params, "steps": step,
            "epochs": step / steps_per_epoch, "learning_rate": args.learning_rate, "weight_decay": args.weight_decay,
            "seed": args.seed, "num_processes": accelerator.num_processes, "elapsed_s": elapsed,
            "final": {split: {k: v for k, v in r.items() if k not in ("kind", "split")} for split, r in final.items()},
            "best": best,
            # evidence for multi-process runs: each process's first micro-batch, and every replica's weights
            "first_batch_indices_per_process": data_indices, "parameter_checksum_per_process": checksums,
        }
        with open(os.path.join(args.output_dir, "results.json"), "w") as f:
            json.dump(results, f, indent=1)
        if not args.no_plot:
            plot_training_curves(metrics_path, os.path.join(args.output_dir, "training_curves.png"),
                                 title=f"{args.model_type} {args.config_overrides} on {args.task} {args.task_options}")
        summary = ", ".join(f"{s} acc {r['accuracy']:.4f}" for s, r in results["final"].items())
        accelerator.print(f"done: {step} steps in {elapsed:.0f} s; {summary}; saved to {args.output_dir}")
    accelerator.end_training()


if __name__ == "__main__":
    main()
