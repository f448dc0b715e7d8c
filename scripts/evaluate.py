"""Perplexity of a saved H-LRU / BD-LRU checkpoint on any text scripts/train.py accepts.

    python scripts/evaluate.py outputs/shakespeare-bdlru                       # its training data's validation split
    python scripts/evaluate.py CHECKPOINT --validation_file notes.txt --window 512
    python scripts/evaluate.py CHECKPOINT --dataset_name wikitext --dataset_config_name wikitext-2-raw-v1

The validation text is tokenized with the checkpoint's own tokenizer and read as one token stream, cut into
`--num_streams` contiguous segments (run side by side as a batch). Each segment is fed in windows of `--window`
tokens with the recurrent state carried from window to window, which for a recurrent model is exact: every
token is predicted from ALL the text before it in its segment, as one long forward pass would, at the memory
cost of one window. `--no_carry_state` resets the state at every window instead (what a fixed-context model
sees). Prints and writes (with --output) loss, perplexity and the number of predicted tokens.
"""

import argparse
import json
import math
import os
import sys

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM

import hf_lrnn  # noqa: F401  (registers the Auto classes)
from hf_lrnn.modeling_lrnn import CACHE_FIELD
from hf_lrnn.training.text_data import add_text_source_arguments, build_lm_task

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # also when this script is imported from elsewhere
from push_to_hub import check_model_folder  # noqa: E402  (scripts/push_to_hub.py, beside this script)


def token_stream(dataset) -> torch.Tensor:
    """The token stream a packed split was cut from: row k holds stream[kB : kB+B], its labels stream[kB+1 : kB+B+1]."""
    rows = dataset.with_format("torch", columns=["input_ids", "labels"])[:]
    return torch.cat([rows["input_ids"].flatten(), rows["labels"][-1, -1:]])


@torch.no_grad()
def stream_nll(model, stream: torch.Tensor, num_streams: int, window: int, carry_state: bool, device) -> tuple:
    """(summed negative log-likelihood, predicted tokens) of `stream` split into `num_streams` segments."""
    length = (len(stream) - 1) // num_streams  # tokens predicted per segment
    if length < 1:
        raise ValueError(f"num_streams={num_streams} leaves no token to predict in a stream of {len(stream)} tokens")
    inputs = torch.stack([stream[i * length : (i + 1) * length] for i in range(num_streams)]).to(device)
    targets = torch.stack([stream[i * length + 1 : (i + 1) * length + 1] for i in range(num_streams)]).to(device)
    total, cache = 0.0, None
    for start in tqdm(range(0, length, window), desc="windows", mininterval=2.0):
        out = model(input_ids=inputs[:, start : start + window], cache=cache if carry_state else None, use_cache=carry_state)
        cache = getattr(out, CACHE_FIELD) if carry_state else None
        total += F.cross_entropy(out.logits.float().flatten(0, 1), targets[:, start : start + window].flatten(),
                                 reduction="sum").item()
    return total, length * num_streams


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a folder written by scripts/train.py (or any saved hf_lrnn model + tokenizer)")
    add_text_source_arguments(p)  # as scripts/train.py; with --train_file alone its held-out part is evaluated
    p.add_argument("--data_seed", type=int, default=12345, help="as in training, so the held-out part is the same")
    p.add_argument("--window", type=int, default=1024, help="tokens fed per forward pass")
    p.add_argument("--num_streams", type=int, default=8, help="contiguous segments evaluated side by side")
    p.add_argument("--no_carry_state", action="store_true", help="reset the recurrent state at every window")
    p.add_argument("--trust_remote_code", action="store_true", help="load the checkpoint's own modeling code")
    p.add_argument("--data_cache_dir", default=None)
    p.add_argument("--output", default=None, help="write the result as JSON here")
    args = p.parse_args(argv)
    problem = check_model_folder(args.checkpoint)  # a folder, config.json of model_type hlru / bdlru, weights
    if problem:
        p.error(f"checkpoint={args.checkpoint!r}: {problem}")
    if not any(os.path.isfile(os.path.join(args.checkpoint, name)) for name in ("tokenizer.json", "tokenizer_config.json")):
        p.error(f"checkpoint={args.checkpoint!r} has no tokenizer (tokenizer.json / tokenizer_config.json): the text is "
                "tokenized with the checkpoint's own tokenizer; save one with tokenizer.save_pretrained(folder)")
    for name in ("window", "num_streams"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")

    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        model = AutoModelForCausalLM.from_pretrained(args.checkpoint, trust_remote_code=args.trust_remote_code)
    except Exception as err:  # a damaged checkpoint (truncated weights, bad config values): one line, not a traceback
        p.error(f"checkpoint={args.checkpoint!r} could not be loaded: {type(err).__name__}: {err}")
    model = model.to(device).eval()
    training_args = {}
    if os.path.isfile(os.path.join(args.checkpoint, "training_args.json")):
        with open(os.path.join(args.checkpoint, "training_args.json")) as f:
            training_args = json.load(f)
    data_args = dict(dataset_name=args.dataset_name, dataset_config_name=args.dataset_config_name,
                     train_file=args.train_file, validation_file=args.validation_file, text_column=args.text_column)
    if not any(data_args.values()) and training_args.get("task") == "lm":  # default: what the model trained on
        data_args = {k: training_args.get(k) for k in data_args}
    # the packing block only shapes the cached rows the stream is rebuilt from (at most one block is dropped)
    try:  # bad data arguments (a missing file, a split too small, ...) are ValueErrors that name the argument
        task = build_lm_task(**data_args, tokenizer_name=args.checkpoint, block_size=64,
                             validation_split_percentage=args.validation_split_percentage, seed=args.data_seed,
                             cache_dir=args.data_cache_dir)
        stream = token_stream(task.test["validation"])
        nll, tokens = stream_nll(model, stream, args.num_streams, args.window, not args.no_carry_state, device)
    except (OSError, ValueError) as err:
        p.error(str(err))
    result = {"checkpoint": args.checkpoint, "data": {k: v for k, v in data_args.items() if v} or "default corpus",
              "tokens": tokens, "loss": nll / tokens, "perplexity": math.exp(min(nll / tokens, 50.0)),
              "window": args.window, "num_streams": args.num_streams, "carry_state": not args.no_carry_state}
    print(json.dumps(result, indent=1))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
