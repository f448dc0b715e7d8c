"""Model cards (README.md) for saved H-LRU / BD-LRU models, from the Jinja templates in model_cards/.

    write_model_card("runs/sc-bdlru4", model_type="bdlru", config=model.config,
                     training_args=vars(args), results=json.load(open("runs/sc-bdlru4/results.json")),
                     dataset_name=None, repo_id="my-org/bdlru-selective-copying")

The YAML header (library_name, pipeline_tag, tags, datasets, license, model-index with the evaluation
results) is a `huggingface_hub.ModelCardData`, so the card parses with `ModelCard.load` and the Hub shows
the results; the body explains the architecture, the configuration, the training budget, the results, how to
load the model (with hf_lrnn installed or with trust_remote_code=True), its limitations and the citation.
"""

import glob
import json
import importlib.util
import math
import os
import re
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData



def _templates_dir() -> Path:
    """model_cards/ of the repository: installed as the data package hf_lrnn.model_cards (pyproject.toml's
    package-dir), or read in place from a source checkout that is only on PYTHONPATH."""
    spec = importlib.util.find_spec("hf_lrnn.model_cards")  # a folder without __init__.py: a namespace package
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(__file__).resolve().parents[2] / "model_cards"


TEMPLATES_DIR = _templates_dir()
ARCH_FIELDS = {  # model_type -> (name, units field, size field)
    "hlru": ("H-LRU", "num_channels", "order"),
    "bdlru": ("BD-LRU", "num_blocks", "block_size"),
}
HUB_ID_PATTERN = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
EVAL_METRICS = ("perplexity", "accuracy", "macro_accuracy", "loss")  # reported in the model-index, in this order
# training arguments that only matter on the machine that ran them: left out of the card
LOCAL_ARGS = ("output_dir", "logging_dir", "data_cache_dir", "resume_from_checkpoint", "cache_dir", "hub_token",
              "train_file", "validation_file")
# the training budget, in this order, from training_args then results.json (all arguments go in a folded block)
BUDGET_KEYS = ("task", "task_options", "dataset_name", "dataset_config_name", "steps", "max_steps", "epochs",
               "num_epochs", "num_train_epochs", "tokens", "block_size", "seq_len", "max_seq_length",
               "per_device_train_batch_size",
               "gradient_accumulation_steps", "num_processes", "learning_rate", "lr_scheduler_type", "warmup_steps",
               "warmup_ratio", "weight_decay", "adam_beta1", "adam_beta2", "max_grad_norm", "mixed_precision", "bf16",
               "seed", "elapsed_s")


def _as_dict(config) -> dict:
    return config.to_dict() if hasattr(config, "to_dict") else dict(config)


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_format(v)}" for k, v in value.items()) or "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(_format(v) for v in value) or "-"
    return str(value).replace("|", "\\|").replace("\n", " ")


def count_parameters(folder, results: dict = None):
    """Parameters of the model: results["parameters"], else the tensors in folder/*.safetensors, else None."""
    if results and isinstance(results.get("parameters"), int):
        return results["parameters"]
    files = sorted(glob.glob(os.path.join(os.fspath(folder), "*.safetensors")))
    if not files:
        return None
    from safetensors import safe_open

    total = 0
    for path in files:
        with safe_open(path, framework="pt") as f:
            total += sum(math.prod(f.get_slice(name).get_shape()) for name in f.keys())
    return total


def final_metrics(results) -> dict:
    """{split: {metric: number}} from a results dict: {"final": {split: {...}}}, {split: {...}} or flat metrics."""
    if not isinstance(results, dict):
        return {}
    final = results.get("final", results)
    if not isinstance(final, dict):
        return {}
    splits = {split: m for split, m in final.items() if isinstance(m, dict)}
    if not splits and any(k in final for k in EVAL_METRICS):
        splits = {"evaluation": final}
    out = {}
    for split, metrics in splits.items():
        numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                   and k != "step" and math.isfinite(v)}
        if numbers:
            out[split] = numbers
    return out


def hub_dataset_id(dataset_name):
    """The Hub dataset id in `dataset_name` ("wikitext", "org/corpus", "wikitext (wikitext-2-raw-v1)"), or None
    when it is a description ("Shakespeare's plays", "synthetic task ...")."""
    head = (dataset_name or "").split(" (")[0].strip()
    return head if HUB_ID_PATTERN.fullmatch(head) else None


def training_budget(training_args: dict, results: dict) -> list:
    """(setting, value) rows of the training budget: the BUDGET_KEYS found in training_args (first) or results, the
    effective batch and, for language modelling (block_size = tokens per sequence), the tokens seen."""
    merged = {**{k: v for k, v in results.items() if k in BUDGET_KEYS}, **training_args}
    is_lm = merged.get("task", "lm") == "lm"  # scripts/train.py's block_size is a sequence length for --task lm only
    rows = [(k, merged[k]) for k in BUDGET_KEYS
            if merged.get(k) not in (None, "", {}, []) and (k != "block_size" or is_lm)]
    per_device = merged.get("per_device_train_batch_size")
    if isinstance(per_device, int):
        batch = per_device * int(merged.get("gradient_accumulation_steps") or 1) * int(merged.get("num_processes") or 1)
        rows.append(("effective batch (sequences per step)", batch))
        steps, seq_len = merged.get("steps") or merged.get("max_steps"), merged.get("block_size")
        if is_lm and "tokens" not in merged and isinstance(steps, int) and isinstance(seq_len, int):
            rows.append(("tokens seen (steps x batch x block_size)", f"{steps * batch * seq_len:,}"))
    return rows


def _head(config: dict) -> str:
    architectures = config.get("architectures") or ["ForCausalLM"]
    for head in ("ForCausalLM", "ForCompression", "ForSequenceClassification"):
        if architectures[0].endswith(head):
            return head[3:]
    return "Model"


def build_model_card(folder, *, model_type, config, training_args=None, results=None, dataset_name=None,
                     repo_id=None, template_path=None) -> ModelCard:
    """The `ModelCard` for the model saved in `folder` (not written; see `write_model_card`)."""
    if model_type not in ARCH_FIELDS:
        raise ValueError(f"model_type must be one of {sorted(ARCH_FIELDS)}, got model_type={model_type!r}")
    arch_name, units_field, size_field = ARCH_FIELDS[model_type]
    config = _as_dict(config)
    training_args = _as_dict(training_args) if training_args else {}
    results = results if isinstance(results, dict) else {}
    head = _head(config)
    is_causal_lm = head == "CausalLM"
    task = results.get("task") or training_args.get("task")
    model_name = (repo_id or os.path.basename(os.path.abspath(os.fspath(folder)))).split("/")[-1]
    data_name = dataset_name or (f"synthetic {task}" if task else "unspecified data")
    hub_dataset = hub_dataset_id(dataset_name)

    metrics = final_metrics(results)
    task_type = {"CausalLM": "text-generation", "SequenceClassification": "text-classification"}.get(head, "other")
    eval_results = [
        EvalResult(task_type=task_type, dataset_type=hub_dataset or str(task or "custom"), dataset_name=data_name,
                   dataset_split=split, metric_type=metric, metric_name=metric.replace("_", " "),
                   metric_value=float(values[metric]))
        for split, values in metrics.items() for metric in EVAL_METRICS if metric in values
    ]
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag={"CausalLM": "text-generation", "SequenceClassification": "text-classification"}.get(head),
        tags=[model_type, "linear-rnn", "recurrent", "custom_code", "arxiv:2602.12021"] + ([str(task)] if task else []),
        datasets=[hub_dataset] if hub_dataset else None,
        license="apache-2.0",
        model_name=model_name,
        eval_results=eval_results or None,
    )

    units, size = config.get(units_field), config.get(size_field)
    parameters = count_parameters(folder, results)
    config_rows = [
        ("architecture", f"{arch_name} {head}" if head != "Model" else arch_name),
        ("hidden_size (d)", config.get("hidden_size")),
        ("num_hidden_layers", config.get("num_hidden_layers")),
        (f"{size_field} (m)", size),
        (f"{units_field} (N)", units),
        ("recurrent state per layer (N * m floats)", units * size if units and size else None),
        ("gate_activation", config.get("gate_activation")),
        ("selective gates", config.get("selective")),
        ("intermediate_size (SwiGLU)", config.get("intermediate_size")),
        ("norm_type", config.get("norm_type")),
        ("vocab_size", config.get("vocab_size")),
        ("tie_word_embeddings", config.get("tie_word_embeddings")),
        ("parameters", f"{parameters:,}" if parameters else None),
    ]
    public_args = {k: v for k, v in training_args.items() if k not in LOCAL_ARGS and not k.endswith("token")}
    training_rows = training_budget(public_args, results)
    eval_rows = [(split, metric, value) for split, values in metrics.items() for metric, value in values.items()]

    template_path = template_path or TEMPLATES_DIR / f"{model_type}.md"
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path),
        title=model_name,
        repo_id=repo_id or "ORG/NAME",
        arch_name=arch_name,
        head=head,
        is_causal_lm=is_causal_lm,
        has_tokenizer=any(os.path.isfile(os.path.join(os.fspath(folder), name)) for name in TOKENIZER_FILES),
        selective=config.get("selective", True),
        gate_activation=config.get("gate_activation", "softmax"),
        data_description=data_name,
        config_rows=[(k, _format(v)) for k, v in config_rows if v is not None],
        training_rows=[(k, _format(v)) for k, v in training_rows],
        eval_rows=[(s, m, _format(v)) for s, m, v in eval_rows],
        training_args_json=json.dumps(public_args, indent=1, sort_keys=True, default=str) if public_args else "",
    )


def write_model_card(folder, *, model_type, config, training_args=None, results=None, dataset_name=None,
                     repo_id=None, template_path=None) -> str:
    """Render the card of the model saved in `folder` and write it to folder/README.md; return that path.

    `config`: the model config (a PretrainedConfig or its dict). `training_args`: the run's arguments (a dict, or
    anything with `to_dict()` such as TrainingArguments) or None. `results`: what a training run writes to
    results.json ({"final": {split: {"loss", "perplexity" | "accuracy", ...}}}; flat metrics work too) or None.
    `dataset_name`: a Hub dataset id (then listed in the card's `datasets`), a description, or None.
    `repo_id`: where the model will live (used in the title and the usage snippets).
    `template_path`: default model_cards/<model_type>.md.
    """
    card = build_model_card(folder, model_type=model_type, config=config, training_args=training_args,
                            results=results, dataset_name=dataset_name, repo_id=repo_id, template_path=template_path)
    path = os.path.join(os.fspath(folder), "README.md")
    card.save(path)
    return path


def write_model_card_from_folder(folder, *, repo_id=None, dataset_name=None) -> str:
    """`write_model_card` from the folder's own config.json, results.json and training_args.json (if present)."""
    def read(name):
        path = os.path.join(os.fspath(folder), name)
        if not os.path.isfile(path):
            return None
        with open(path) as f:
            return json.load(f)

    config = read("config.json")
    training_args = read("training_args.json")
    results = read("results.json")
    if dataset_name is None:
        for source in (training_args or {}, results or {}):
            dataset_name = dataset_name or source.get("dataset_name")
    return write_model_card(folder, model_type=config["model_type"], config=config, training_args=training_args,
                            results=results, dataset_name=dataset_name, repo_id=repo_id)
