"""Configurations of H-LRU and BD-LRU language models (arXiv 2602.12021; docs/spec.md in the hf_lrnn repository).

Both share one backbone (token embedding -> blocks of [norm -> mixer -> residual, norm -> SwiGLU ->
residual] -> final norm -> LM head), so they share `LRNNConfig`; they differ only in the mixer:

* H-LRU: `num_channels` channels, each mixing its last `order` states.
* BD-LRU: `num_blocks` blocks, each a dense `block_size` x `block_size` transition.

The recurrent state of one layer is `num_channels * order` (resp. `num_blocks * block_size`) floats
per sequence, whatever the context length.
"""

import difflib
import inspect
import math
from typing import Optional

from transformers import GenerationConfig, PretrainedConfig
from transformers.utils import logging

from .scan_torch import GATE_ACTIVATIONS

logger = logging.get_logger(__name__)
NORM_TYPES = ("layernorm", "rmsnorm")
SCAN_BACKENDS = (None, "torch", "triton")
LOSS_BACKENDS = (None, "torch", "triton")
SCAN_LAYOUTS = ("time_first", "time_last")


def default_intermediate_size(hidden_size: int) -> int:
    """The paper's SwiGLU width: int(2 * d * 4 / 3) rounded up to a multiple of 16."""
    return int(math.ceil(int(2 * hidden_size * 4 / 3) / 16) * 16)


def _require_int(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _require_choice(name: str, value, choices) -> None:
    if not any(value is choice or (isinstance(value, str) and value == choice) for choice in choices):
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _require_bool(name: str, value) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")


def _require_number(name: str, value, positive: bool) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= 0 if positive else value < 0):
        raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")


# Keys that transformers itself reads or writes in a config (also those of older releases and generation settings
# saved in old config.json files): never taken for misspellings of our fields, however close they are.
_TRANSFORMERS_KEYS = {
    "sep_token_id", "decoder_start_token_id", "forced_bos_token_id", "forced_eos_token_id", "tie_encoder_decoder",
    "is_decoder", "add_cross_attention", "cross_attention_hidden_size", "tokenizer_class", "prefix",
    "task_specific_params", "finetuning_task", "pruned_heads", "torchscript", "use_bfloat16", "tf_legacy_loss",
    "torch_dtype", "dtype", "auto_map", "custom_pipelines", "_commit_hash", "_name_or_path", "name_or_path",
    "attn_implementation", "_attn_implementation", "_attn_implementation_autoset", "num_labels", "model_type",
    "transformers_version", "architectures", "use_return_dict", "tie_last_hidden_states", "per_layer_config",
}
_known_keys_cache = []


def _transformers_keys() -> set:
    """`_TRANSFORMERS_KEYS` plus what this transformers release puts in a default config and generation config."""
    if not _known_keys_cache:
        keys = set(_TRANSFORMERS_KEYS)
        for make in (PretrainedConfig, GenerationConfig):
            try:
                keys |= set(make().to_dict())
            except Exception:  # pragma: no cover - a release whose defaults cannot be built: the fixed list stays
                pass
        _known_keys_cache.append(keys)
    return _known_keys_cache[0]


def _own_fields(cls) -> list:
    """The keyword arguments of `cls` (an LRNNConfig subclass) that are config fields."""
    names = []
    for klass in (cls, LRNNConfig):
        for name in inspect.signature(klass.__init__).parameters:
            if name not in ("self", "kwargs", "num_units", "unit_size") and name not in names:
                names.append(name)
    return names


def _check_unknown_keys(cls, kwargs: dict) -> None:
    """Refuse keys that are plausibly misspellings of our own fields (or the other architecture's mixer fields).

    transformers stores any unknown key as an attribute that nothing reads, so `HLRUConfig(odrer=3)` would silently
    build an order-2 model. Keys transformers knows are never flagged. A config loaded from a saved config.json
    (which carries `transformers_version`) only gets a warning, so that checkpoints saved with such a key still load.
    """
    own = _own_fields(cls)
    mixer_fields = {}  # the mixer fields of the other architectures -> ours
    for other in LRNNConfig.__subclasses__():
        if other.unit_fields != cls.unit_fields:
            mixer_fields.update(zip(other.unit_fields, cls.unit_fields))
    problems = []
    for key in kwargs:
        if key in own or not isinstance(key, str):
            continue
        if key in mixer_fields:
            problems.append(
                f"{key!r} is not a field of {cls.__name__} (it is a field of another architecture); "
                f"did you mean {mixer_fields[key]!r}?"
            )
            continue
        matches = difflib.get_close_matches(key, own, n=1, cutoff=0.8)
        if matches and key not in _transformers_keys():
            problems.append(f"unknown config key {key!r} (= {kwargs[key]!r}); did you mean {matches[0]!r}?")
    if not problems:
        return
    message = f"{cls.__name__}: " + "; ".join(problems) + f" (the fields of {cls.__name__}: {', '.join(own)})"
    if "transformers_version" in kwargs:  # loading a saved config.json: the key was ignored when it was saved too
        logger.warning(message + "; the key is ignored")
    else:
        raise ValueError(message)


class LRNNConfig(PretrainedConfig):
    """Fields shared by `HLRUConfig` and `BDLRUConfig` (see their docstrings)."""

    keys_to_ignore_at_inference = ["past_key_values", "cache"]
    # name of the two mixer fields in the subclass: (number of channels/blocks, order/block size)
    unit_fields = ("num_units", "unit_size")

    def __init__(
        self,
        vocab_size: int = 50304,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_units: Optional[int] = None,
        unit_size: int = 2,
        gate_activation: str = "softmax",
        selective: bool = True,
        intermediate_size: Optional[int] = None,
        norm_type: str = "layernorm",
        norm_eps: float = 1e-5,
        initializer_range: float = 0.02,
        scan_backend: Optional[str] = None,
        loss_backend: Optional[str] = None,
        scan_layout: str = "time_last",
        tie_word_embeddings: bool = True,
        use_cache: bool = True,
        pad_token_id: Optional[int] = None,
        bos_token_id: Optional[int] = None,
        eos_token_id: Optional[int] = None,
        **kwargs,
    ):
        units_name, size_name = self.unit_fields
        _check_unknown_keys(type(self), kwargs)
        _require_int("vocab_size", vocab_size)
        _require_int("hidden_size", hidden_size)
        _require_int("num_hidden_layers", num_hidden_layers)
        _require_int(size_name, unit_size)
        if num_units is None:
            if hidden_size % unit_size:
                raise ValueError(
                    f"{units_name}=None means hidden_size // {size_name}, which needs {size_name} ({unit_size}) to "
                    f"divide hidden_size ({hidden_size}); set {units_name} explicitly"
                )
            num_units = hidden_size // unit_size
        _require_int(units_name, num_units)
        _require_choice("gate_activation", gate_activation, GATE_ACTIVATIONS)
        _require_bool("selective", selective)
        if intermediate_size is None:
            intermediate_size = default_intermediate_size(hidden_size)
        _require_int("intermediate_size", intermediate_size)
        _require_choice("norm_type", norm_type, NORM_TYPES)
        _require_number("norm_eps", norm_eps, positive=True)
        _require_number("initializer_range", initializer_range, positive=False)
        _require_choice("scan_backend", scan_backend, SCAN_BACKENDS)
        _require_choice("loss_backend", loss_backend, LOSS_BACKENDS)
        _require_choice("scan_layout", scan_layout, SCAN_LAYOUTS)
        _require_bool("tie_word_embeddings", tie_word_embeddings)
        _require_bool("use_cache", use_cache)

        def is_token_id(token_id):
            return isinstance(token_id, int) and not isinstance(token_id, bool) and 0 <= token_id < vocab_size

        for name, token_id in (("pad_token_id", pad_token_id), ("bos_token_id", bos_token_id)):
            if token_id is not None and not is_token_id(token_id):
                raise ValueError(f"{name} must be None or an integer in [0, vocab_size={vocab_size}), got {token_id!r}")
        eos_ids = eos_token_id if isinstance(eos_token_id, (list, tuple)) else [eos_token_id]
        for token_id in eos_ids:
            if token_id is not None and not is_token_id(token_id):
                raise ValueError(
                    f"eos_token_id must be None, an integer or a list of integers in [0, vocab_size={vocab_size}), "
                    f"got {eos_token_id!r}"
                )

        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        setattr(self, units_name, num_units)
        setattr(self, size_name, unit_size)
        self.gate_activation = gate_activation
        self.selective = selective
        self.intermediate_size = intermediate_size
        self.norm_type = norm_type
        self.norm_eps = float(norm_eps)
        self.initializer_range = float(initializer_range)
        self.scan_backend = scan_backend
        self.loss_backend = loss_backend
        self.scan_layout = scan_layout
        self.use_cache = use_cache
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )

    @property
    def num_units(self) -> int:
        """N: channels (H-LRU) or blocks (BD-LRU)."""
        return getattr(self, self.unit_fields[0])

    @property
    def unit_size(self) -> int:
        """m: order (H-LRU) or block size (BD-LRU)."""
        return getattr(self, self.unit_fields[1])

    @property
    def state_size(self) -> int:
        """Floats of recurrent state per layer and sequence: N * m."""
        return self.num_units * self.unit_size

    @property
    def layer_types(self):
        # informative only (the models own their cache): every layer is a linear recurrence
        return ["linear_attention"] * self.num_hidden_layers


class HLRUConfig(LRNNConfig):
    """Configuration of an H-LRU (higher-order linear recurrent unit) model.

    Args:
        vocab_size: number of tokens.
        hidden_size: model width d.
        num_hidden_layers: number of blocks (each: mixer sublayer + SwiGLU sublayer).
        num_channels: N, recurrent channels per layer; default `hidden_size // order`.
        order: m >= 1, how many past states each channel mixes (`s_t = sum_i a_t^(i) s_{t-i} + g_t v_t`).
        gate_activation: phi of the L1-normalised gates, one of "softmax" (paper), "sigmoid", "relu",
            "tanh", "linear" (both signed) or "none" (no normalisation; unstable ablation).
        selective: input-dependent gates (True) or a learned per-channel gate logit table (False).
        intermediate_size: SwiGLU width; default int(2*d*4/3) rounded up to a multiple of 16.
        norm_type: "layernorm" (paper) or "rmsnorm".
        norm_eps: epsilon of the norms.
        initializer_range: std of the normal init of every Linear and Embedding weight.
        scan_backend: None (Triton on CUDA, PyTorch elsewhere), "torch" or "triton" to force one.
            The environment variable HF_LRNN_BACKEND overrides None as well. The models read this field at
            every forward, so `model.config.scan_backend = "torch"` after construction takes effect. It is
            saved with the checkpoint, but a saved "triton" never stops a checkpoint from running: where
            Triton cannot run (CPU tensors without TRITON_INTERPRET=1, or no Triton installed) the models fall
            back to "torch" (same results) with a one-time warning. Prefer None for checkpoints you share.
        loss_backend: the causal-LM loss when `labels` are given. "triton": one Triton kernel that computes the
            loss and its gradient in a single pass over the logits in their own dtype (hf_lrnn/lm_loss.py; the same
            loss up to float32 rounding, far less memory traffic: a training step of a 125M model 12-14 % faster
            on an H200); falls back to "torch" with a one-time warning where Triton cannot run, and under
            torch.compile (inductor fuses transformers' loss itself). "torch": transformers' `ForCausalLMLoss`
            (float32 copy of the logits, log_softmax). None (default): "triton" for logits on a CUDA device with
            Triton installed, else "torch", silently. Read at every forward.
        scan_layout: the memory layout of the scan on the Triton backend, for order / block_size 1, 2 and 4 with
            selective gates. "time_last" (default): the projections write [B, N(, m), T] tensors
            (`hlru_scan_time_last`, `bdlru_scan_time_last`), in which the scan streams at close to the memory
            bandwidth, and the scan writes the read-out that the output projection reads in that layout.
            "time_first": they write [B, T, N] tensors, as for every other order. Same function (the products sum
            in another order); packed documents too. Steps with padding, a decode step, adapters on the
            projections, the torch backend, and every other order keep [B, T, N] tensors whatever this says. Read
            at every forward. On the H200 a captured training step is 3-7 % faster
            "time_last" (29.4 against 31.6 ms at order 2, 30.9 against 31.8 at order 1; d = 768, B8 T2048;
            docs/kernels.md); at BD-LRU block size 2, 33.2 against 33.7 ms, at block size 4 37.5 against 37.8.
        tie_word_embeddings: share the LM head with the token embedding.
        use_cache: return the recurrent-state cache from forward (used by generate()).
        pad_token_id, bos_token_id, eos_token_id: special token ids.
    """

    model_type = "hlru"
    unit_fields = ("num_channels", "order")

    def __init__(self, num_channels: Optional[int] = None, order: int = 2, **kwargs):
        kwargs.pop("num_units", None)
        kwargs.pop("unit_size", None)
        super().__init__(num_units=num_channels, unit_size=order, **kwargs)


class BDLRUConfig(LRNNConfig):
    """Configuration of a BD-LRU (block-diagonal linear recurrent unit) model.

    Args:
        num_blocks: N, number of diagonal blocks per layer; default `hidden_size // block_size`.
        block_size: m >= 1, each block is a dense m x m input-dependent transition
            (`h_t = A_t h_{t-1} + g_t * v_t`, each row of [A_t | g_t] L1-normalised).
        All other fields: as in `HLRUConfig`.
    """

    model_type = "bdlru"
    unit_fields = ("num_blocks", "block_size")

    def __init__(self, num_blocks: Optional[int] = None, block_size: int = 2, **kwargs):
        kwargs.pop("num_units", None)
        kwargs.pop("unit_size", None)
        super().__init__(num_units=num_blocks, unit_size=block_size, **kwargs)


__all__ = ["LRNNConfig", "HLRUConfig", "BDLRUConfig", "GATE_ACTIVATIONS", "NORM_TYPES"]
