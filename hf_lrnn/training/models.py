"""Build a model for a training run from `--model_type`, `--config_overrides` and the task's needs.

Besides our two architectures, transformers' Llama and Mamba train through the same script as baselines
(`BASELINE_DEFAULTS` makes them the same shape as ours: our SwiGLU width, tied embeddings, 64-wide heads).
"""

import inspect

from transformers import CONFIG_MAPPING

from ..configuration_lrnn import BDLRUConfig, HLRUConfig, LRNNConfig, default_intermediate_size

CONFIG_CLASSES = {"hlru": HLRUConfig, "bdlru": BDLRUConfig}
BASELINE_TYPES = ("llama", "mamba")
MODEL_TYPES = tuple(CONFIG_CLASSES) + BASELINE_TYPES
# Every run starts from the paper's synthetic-task size: width 128, 2 blocks of (mixer, SwiGLU) (MAD's "4 layers").
MODEL_DEFAULTS = {"hidden_size": 128, "num_hidden_layers": 2}


def baseline_defaults(model_type: str, fields: dict) -> dict:
    """Fields a baseline needs to match our models' shape, given the run's `fields` (hidden_size at least)."""
    if model_type == "llama":  # pre-norm attention + our SwiGLU width; 64-wide heads; no biases, tied embeddings
        return {"intermediate_size": default_intermediate_size(fields["hidden_size"]),
                "num_attention_heads": max(1, fields["hidden_size"] // 64), "tie_word_embeddings": True,
                "max_position_embeddings": 8192}
    return {"tie_word_embeddings": True}  # mamba: its own defaults (expand 2, state 16, conv 4)


def parse_value(text: str):
    """'3' -> 3, '0.1' -> 0.1, 'true'/'false' -> bool, 'none' -> None, anything else -> the string."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip()


def parse_key_values(text: str, argument: str) -> dict:
    """'a=1,b=x' -> {'a': 1, 'b': 'x'}; an item without '=' raises a ValueError naming `argument`."""
    result = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{argument}: expected comma-separated key=value pairs, got {item!r} in {text!r}")
        result[key.strip()] = parse_value(value)
    return result


def config_fields(model_type: str) -> set:
    """Names a config of this model type accepts."""
    if model_type in BASELINE_TYPES:
        config_class = CONFIG_MAPPING[model_type]
        return set(config_class().to_dict()) | {p for p in inspect.signature(config_class.__init__).parameters
                                                if p not in ("self", "kwargs")}
    config_class = CONFIG_CLASSES[model_type]
    names = set()
    for cls in (config_class, LRNNConfig):
        names |= {p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "kwargs")}
    return names - {"num_units", "unit_size"}


def build_config(model_type: str, vocab_size: int, overrides: str = "", defaults: dict = MODEL_DEFAULTS):
    """The config of a run: `defaults`, then the task's vocab size, then `--config_overrides` on top."""
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type must be one of {list(MODEL_TYPES)}, got {model_type!r}")
    fields = {**defaults, "vocab_size": vocab_size, **parse_key_values(overrides, "config_overrides")}
    if model_type in BASELINE_TYPES:
        fields = {**baseline_defaults(model_type, fields), **fields}
    unknown = sorted(set(fields) - config_fields(model_type))
    if unknown:
        raise ValueError(
            f"config_overrides: unknown field(s) {unknown} for model_type={model_type!r}; "
            f"valid fields: {sorted(config_fields(model_type))}"
        )
    if fields["vocab_size"] < vocab_size:
        raise ValueError(f"config_overrides: vocab_size={fields['vocab_size']} is smaller than the task's {vocab_size}")
    if model_type in BASELINE_TYPES:
        return CONFIG_MAPPING[model_type](**fields)
    return CONFIG_CLASSES[model_type](**fields)
