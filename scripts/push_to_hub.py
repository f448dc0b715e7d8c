"""Push a saved H-LRU / BD-LRU model folder to the Hugging Face Hub, with a model card.

    python scripts/push_to_hub.py runs/sc-bdlru4 my-org/bdlru-selective-copying [--private] [--revision R]
        [--token T] [--commit_message M] [--dataset_name D]

CHECKPOINT_DIR is a folder written by `save_pretrained` (scripts/train.py's --output_dir): config.json with
model_type hlru or bdlru, the weights and the modeling files. README.md is (re)written from the folder's
config.json, results.json and training_args.json (when present), then the folder is uploaded in one commit
(training checkpoints are left out). The token defaults to HF_TOKEN or the stored login, the endpoint to
HF_ENDPOINT. Prints the repo URL; on failure prints what failed and exits 1 (2 if the folder is not a saved
hf_lrnn model).
"""

import argparse
import json
import os
import sys

MODEL_TYPES = ("hlru", "bdlru")
# what save_pretrained writes: one file, or an index of shards (safetensors, or torch's format for safe_serialization=False)
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def check_model_folder(folder: str):
    """None if `folder` holds a saved hf_lrnn model, else a sentence saying why not."""
    config_path = os.path.join(folder, "config.json")
    if not os.path.isdir(folder):
        return f"{folder} is not a folder"
    if not os.path.isfile(config_path):
        return f"{folder} has no config.json: not a saved model (expected the output of save_pretrained)"
    try:
        with open(config_path) as f:
            model_type = json.load(f).get("model_type")
    except (ValueError, AttributeError, OSError) as err:
        return f"{config_path} is not a JSON config: {err}"
    if model_type not in MODEL_TYPES:
        return f"{config_path} has model_type={model_type!r}; expected one of {MODEL_TYPES} (an hf_lrnn model)"
    if not any(os.path.isfile(os.path.join(folder, name)) for name in WEIGHT_FILES):
        return f"{folder} has a config.json but no weights ({' or '.join(WEIGHT_FILES)}): not a complete saved model"
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint_dir", help="folder written by save_pretrained")
    p.add_argument("repo_id", help="ORG/NAME of the model repo (created if missing)")
    p.add_argument("--private", action="store_true", help="create the repo private (ignored if it exists)")
    p.add_argument("--revision", default=None, help="branch to push to (created from main if missing)")
    p.add_argument("--token", default=None, help="a write token (default: HF_TOKEN or the stored login)")
    p.add_argument("--commit_message", default=None)
    p.add_argument("--dataset_name", default=None, help="Hub dataset id for the card (default: from the folder)")
    args = p.parse_args(argv)

    problem = check_model_folder(args.checkpoint_dir)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2

    from hf_lrnn.training.hub import DEFAULT_COMMIT_MESSAGE, HubPushError, push_to_hub, validate_repo_id
    from hf_lrnn.training.model_card import write_model_card_from_folder

    try:
        validate_repo_id(args.repo_id)  # before writing anything
        card = write_model_card_from_folder(args.checkpoint_dir, repo_id=args.repo_id, dataset_name=args.dataset_name)
        print(f"wrote {card}")
        url = push_to_hub(args.checkpoint_dir, args.repo_id, private=args.private, revision=args.revision,
                          token=args.token, commit_message=args.commit_message or DEFAULT_COMMIT_MESSAGE)
    except HubPushError as err:  # also a malformed repo id (InvalidRepoIdError), caught before writing the card
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"pushed {args.checkpoint_dir} to {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
