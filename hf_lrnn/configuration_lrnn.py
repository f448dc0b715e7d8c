"""Configurations of H-LRU and BD-LRU language models (arXiv 2602.12021; docs/spec.md in the hf_lrnn repository).

Both share one backbone (token embedding -> blocks of [norm -> mixer -> residual, norm -> SwiGLU ->
residual] -> final norm -> LM head), so they share `LRNNConfig`; they differ only in the mixer:

* H-LRU: `num_channels` channels, each mixing its last `order` states.
* BD-LRU: `num_blocks` blocks, each a dense `block_size` x `block_size` transition.

The recurrent state of one layer is `num_channels * order` (resp. `num_blocks * block_size`) floats
per sequence, whatever the context length.
"""

import math
from typing import Optional

from transformers import PretrainedConfig

from .scan_torch import GATE_ACTIVATIONS
NORM_TYPES = ("layernorm", "rmsnorm")
SCAN_BACKENDS = (None, "torch", "triton")


def default_intermediate_size(hidden_size: int) -> int:
    """The paper's SwiGLU width: int(2 * d * 4 / 3) rounded up to a multiple of 16."""
    return int(math.ceil(int(2 * hidden_size * 4 / 3) / 16) * 16)


def _require_int(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _require_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


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
        tie_word_embeddings: bool = True,
        use_cache: bool = True,
        pad_token_id: Optional[int] = None,
        bos_token_id: Optional[int] = None,
        eos_token_id: Optional[int] = None,
        **kwargs,
    ):
        units_name, size_name = self.unit_fields
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
        if not isinstance(selective, bool):
            raise ValueError(f"selective must be True or False, got {selective!r}")
        if intermediate_size is None:
            intermediate_size = default_intermediate_size(hidden_size)
        _require_int("intermediate_size", intermediate_size)
        _require_choice("norm_type", norm_type, NORM_TYPES)
        if not isinstance(norm_eps, (int, float)) or isinstance(norm_eps, bool) or not norm_eps > 0:
            raise ValueError(f"norm_eps must be a positive number, got {norm_eps!r}")
        if not isinstance(initializer_range, (int, float)) or isinstance(initializer_range, bool) or initializer_range < 0:
            raise ValueError(f"initializer_range must be a number >= 0, got {initializer_range!r}")
        _require_choice("scan_backend", scan_backend, SCAN_BACKENDS)
        for name, token_id in (("pad_token_id", pad_token_id), ("bos_token_id", bos_token_id)):
            if token_id is not None and (not isinstance(token_id, int) or not 0 <= token_id < vocab_size):
                raise ValueError(f"{name} must be None or an integer in [0, vocab_size={vocab_size}), got {token_id!r}")
        eos_ids = eos_token_id if isinstance(eos_token_id, (list, tuple)) else [eos_token_id]
        for token_id in eos_ids:
            if token_id is not None and (not isinstance(token_id, int) or not 0 <= token_id < vocab_size):
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
