"""Recurrent-state cache for H-LRU and BD-LRU, a `transformers.cache_utils.Cache` subclass.

Per layer it holds one tensor `state` [B, N, m] (float32; float64 only for a float64 model on the torch
backend): the last m states per channel for H-LRU (s_t, s_{t-1}, ..., s_{t-m+1}), or the block states h_t
for BD-LRU (layouts: docs/spec.md in the hf_lrnn repository, "Recurrent-state cache"). Its size does not
depend on how many tokens were seen, so a decode step costs the same at any context length.

Why our own class: the stock all-linear `DynamicCache` raises in `get_seq_length()` on transformers
5.17 (found by reading and running transformers 5.17's cache_utils.py and generate()), and its
`LinearAttentionLayer` only reports a previous state after a conv-state update. This cache counts the
tokens it has seen itself.
"""

from typing import List, Optional

import torch
from transformers.cache_utils import Cache


def _can_write_in_place(old: Optional[torch.Tensor], new: torch.Tensor) -> bool:
    """Whether `new` can be copied into `old` (same shape, dtype and device; no autograd history on either side; not an
    inference tensor outside inference mode), which keeps the state's address stable for CUDA graphs."""
    return (
        old is not None
        and old is not new
        and old.shape == new.shape
        and old.dtype == new.dtype
        and old.device == new.device
        and not old.requires_grad
        and not new.requires_grad
        # (compiled code never meets inference tensors: torch.compile refuses to trace is_inference)
        and (torch.compiler.is_compiling() or not old.is_inference() or torch.is_inference_mode_enabled())
    )


def _static(state: torch.Tensor) -> torch.Tensor:
    """Mark a new state tensor as having a fixed address (as transformers' StaticCache does with its key / value
    tensors): inductor's CUDA graphs then let a compiled decode step write it in place instead of skipping the graph
    for a mutated input. Not for states with autograd history (training through the cache) or inside compiled code."""
    if not state.requires_grad and not torch.compiler.is_compiling():
        torch._dynamo.mark_static_address(state, guard=False)  # a new tensor re-records the graph, no recompile
    return state


class LRNNCacheLayer:
    """The recurrent state of one layer. `state` is None until the first forward writes it; later forwards write into
    the same tensor (see `LRNNCache`)."""

    is_compileable = True
    is_sliding = False
    is_croppable = False
    supports_early_init = False

    def __init__(self):
        self.state: Optional[torch.Tensor] = None  # [B, N, m] float32

    @property
    def is_initialized(self) -> bool:
        return self.state is not None

    @property
    def batch_size(self) -> int:
        return -1 if self.state is None else self.state.shape[0]

    def get_seq_length(self) -> int:  # the container keeps the count
        return 0

    def get_max_length(self) -> int:
        return -1  # no limit: the state has a fixed size

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        if self.state is not None:
            self.state = _static(self.state.index_select(0, beam_idx.to(self.state.device)))

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.state is not None:
            self.state = _static(self.state.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.state is not None:
            self.state = _static(self.state[indices])

    def reset(self) -> None:
        if self.state is not None:
            if _can_write_in_place(self.state, self.state.detach()):
                self.state.zero_()  # in place: a captured decode step keeps reading the same tensor
            else:
                self.state = _static(torch.zeros_like(self.state))

    def crop(self, max_length: int) -> None:
        raise ValueError(
            "LRNNCache cannot be cropped: a recurrent state cannot be rolled back to an earlier position "
            f"(asked to crop to {max_length}). Re-run the prompt prefix instead."
        )

    def offload(self) -> None:
        pass

    def prefetch(self) -> None:
        pass

    def __repr__(self) -> str:
        shape = None if self.state is None else tuple(self.state.shape)
        return f"LRNNCacheLayer(state={shape})"


def _owner_of(config) -> tuple:
    """What a cache must agree on with the model that uses it: (model_type, num_hidden_layers, N, m)."""
    return (
        getattr(config, "model_type", None),
        getattr(config, "num_hidden_layers", None),
        getattr(config, "num_units", None),
        getattr(config, "unit_size", None),
    )


def _check_index_tensor(method: str, name: str, index, allow_bool: bool) -> None:
    """A 1-D integer (or boolean) tensor of batch indices; the range is not checked here (that would need a sync)."""
    allowed = "an integer" + (" or boolean" if allow_bool else "")
    if not isinstance(index, torch.Tensor):
        raise ValueError(f"{method}: {name} must be {allowed} torch.Tensor [batch], got {type(index).__name__}")
    if index.dim() != 1 or index.is_floating_point() or index.is_complex() or (index.dtype == torch.bool and not allow_bool):
        raise ValueError(f"{method}: {name} must be {allowed} 1-D tensor [batch], got {index.dtype} {tuple(index.shape)}")


class LRNNCache(Cache):
    """Cache of H-LRU / BD-LRU models: one `LRNNCacheLayer` per block plus a count of tokens seen.

    Built by the model on its first forward with `use_cache=True` (generate() does this for you); pass it
    back as `cache=` (transformers >= 5.24) or `past_key_values=` (5.17 - 5.23) to continue.

    Static once written: the first forward allocates each layer's state [B, N, m]; later forwards (a decode step, a
    continuation) copy the new state into that tensor, so its address never changes and a decode step can be
    captured in a CUDA graph or compiled (`is_compileable`). A state with autograd history (training through the
    cache), another batch size (`reorder_cache`, `batch_repeat_interleave`, `batch_select_indices`) or dtype is
    stored as a new tensor instead. A tensor obtained from `get_state` / `states` is therefore overwritten by the
    next forward: clone it to keep it.
    """

    is_compileable = True

    def __init__(self, config=None, num_layers: Optional[int] = None, **kwargs):
        if num_layers is None:
            if config is None:
                raise ValueError("LRNNCache needs a config (an HLRUConfig / BDLRUConfig) or num_layers")
            num_layers = getattr(config, "num_hidden_layers", None)
            if num_layers is None:
                raise ValueError(
                    f"LRNNCache: config must be a model config with num_hidden_layers (an HLRUConfig or BDLRUConfig), "
                    f"got {type(config).__name__}"
                )
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"LRNNCache: num_layers must be an integer >= 1, got {num_layers!r}")
        super().__init__(layers=[LRNNCacheLayer() for _ in range(num_layers)])
        self._seen_tokens = 0
        # (model_type, num_hidden_layers, N, m) of the model that uses this cache: from the config, or set on first use
        self._owner = _owner_of(config) if config is not None else None
        # (model config, state tensors) of the captured decode step this cache was last bound to (decoding_lrnn.py)
        self._captured_states = None

    # -- checks -----------------------------------------------------------------------------------------
    def _layer(self, layer_idx) -> LRNNCacheLayer:
        count = len(self.layers)
        if isinstance(layer_idx, bool) or not isinstance(layer_idx, int) or not -count <= layer_idx < count:
            raise ValueError(f"LRNNCache: layer_idx must be an integer in [0, {len(self.layers)}), got {layer_idx!r}")
        return self.layers[layer_idx]

    def check_model(self, config, batch_size: Optional[int] = None) -> None:
        """Raise a ValueError unless this cache can continue a forward of the model with `config` on `batch_size` rows.

        Called by the models before every forward that gets a cache (shape checks only, no device sync). The first
        model to use a cache owns it: a cache from another architecture, layer count or state shape is refused, and so
        are states of another batch size (beam search and batch expansion go through the cache's own methods).
        """
        owner = _owner_of(config)
        if len(self.layers) != owner[1]:
            raise ValueError(
                f"cache: this LRNNCache has {len(self.layers)} layers but the model has num_hidden_layers={owner[1]}; "
                "pass the cache returned by this model (or None)"
            )
        if self._owner is not None and self._owner != owner:
            names = ("model_type", "num_hidden_layers", "N (num_channels / num_blocks)", "m (order / block_size)")
            differ = ", ".join(f"{n} {a!r} vs {b!r}" for n, a, b in zip(names, self._owner, owner) if a != b)
            raise ValueError(
                f"cache: this LRNNCache belongs to another model (cache vs this model: {differ}); pass the cache "
                "returned by this model (or None)"
            )
        state_shape = (owner[2], owner[3])
        for layer_idx, layer in enumerate(self.layers):
            state = layer.state
            if state is None:
                continue
            if tuple(state.shape[1:]) != state_shape:
                raise ValueError(
                    f"cache: layer {layer_idx} holds a state of shape {tuple(state.shape)}, but this model's states are "
                    f"[batch, N, m] = [batch, {state_shape[0]}, {state_shape[1]}] (a cache of another model?)"
                )
            if batch_size is not None and state.shape[0] != batch_size:
                raise ValueError(
                    f"cache: layer {layer_idx} holds states for a batch of {state.shape[0]} sequences, but the input has "
                    f"{batch_size} rows; continue a cache with inputs of its batch size (or use reorder_cache / "
                    "batch_repeat_interleave / batch_select_indices)"
                )
        self._owner = owner

    # -- state access used by the mixers --------------------------------------------------------------
    def get_state(self, layer_idx: int) -> Optional[torch.Tensor]:
        return self._layer(layer_idx).state

    def set_state(self, layer_idx: int, state: torch.Tensor) -> None:
        layer = self._layer(layer_idx)
        if not isinstance(state, torch.Tensor) or state.dim() != 3 or not state.is_floating_point():
            got = type(state).__name__
            if isinstance(state, torch.Tensor):
                got = f"{state.dtype} tensor of shape {tuple(state.shape)}"
            raise ValueError(f"LRNNCache.set_state: state must be a floating tensor [batch, N, m], got {got}")
        if state is layer.state:
            return  # already written in place (a decode step's scan, `ops.scan_step_into`)
        if _can_write_in_place(layer.state, state):
            layer.state.copy_(state)
        else:
            layer.state = _static(state)

    def advance(self, num_tokens: int) -> None:
        """Record that one forward consumed `num_tokens` new positions (called once per forward)."""
        if isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or num_tokens < 0:
            raise ValueError(f"LRNNCache.advance: num_tokens must be an integer >= 0, got {num_tokens!r}")
        self._seen_tokens += num_tokens

    # -- batch operations (beam search, batch expansion), checked once here rather than per layer -----------
    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        _check_index_tensor("LRNNCache.reorder_cache", "beam_idx", beam_idx, allow_bool=False)
        super().reorder_cache(beam_idx)

    def batch_repeat_interleave(self, repeats: int) -> None:
        if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
            raise ValueError(f"LRNNCache.batch_repeat_interleave: repeats must be an integer >= 1, got {repeats!r}")
        super().batch_repeat_interleave(repeats)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        _check_index_tensor("LRNNCache.batch_select_indices", "indices", indices, allow_bool=True)
        super().batch_select_indices(indices)

    @property
    def states(self) -> List[Optional[torch.Tensor]]:
        return [layer.state for layer in self.layers]

    # -- the Cache interface generate() relies on ------------------------------------------------------
    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self._seen_tokens

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0):
        return query_length + self._seen_tokens, 0

    def get_max_length(self, layer_idx: Optional[int] = None) -> int:
        return -1

    def has_previous_state(self, layer_idx: Optional[int] = None, state_idx: Optional[int] = None) -> bool:
        layers = self.layers if layer_idx is None else [self.layers[layer_idx]]
        return all(layer.state is not None for layer in layers)

    def reset(self) -> None:
        super().reset()
        self._seen_tokens = 0

    def crop(self, max_length: int) -> None:
        self.layers[0].crop(max_length)

    def update(self, *args, **kwargs):
        raise NotImplementedError("LRNNCache holds recurrent states, not keys/values: use set_state().")

    @property
    def is_linear(self) -> List[bool]:
        return [True] * len(self.layers)

    @property
    def is_sliding(self) -> List[bool]:
        return [False] * len(self.layers)

    @property
    def is_croppable(self) -> bool:
        return False

    @property
    def is_initialized(self) -> bool:
        return all(layer.state is not None for layer in self.layers)

    @property
    def batch_size(self) -> int:
        sizes = {layer.batch_size for layer in self.layers}
        return sizes.pop() if len(sizes) == 1 else -1

    def __repr__(self) -> str:
        return f"LRNNCache(seen_tokens={self._seen_tokens}, layers={self.layers})"


__all__ = ["LRNNCache", "LRNNCacheLayer"]
