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


class LRNNCacheLayer:
    """The recurrent state of one layer. `state` is None until the first forward writes it."""

    is_compileable = False
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
            self.state = self.state.index_select(0, beam_idx.to(self.state.device))

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.state is not None:
            self.state = self.state.repeat_interleave(repeats, dim=0)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.state is not None:
            self.state = self.state[indices]

    def reset(self) -> None:
        if self.state is not None:
            self.state = torch.zeros_like(self.state)

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


class LRNNCache(Cache):
    """Cache of H-LRU / BD-LRU models: one `LRNNCacheLayer` per block plus a count of tokens seen.

    Built by the model on its first forward with `use_cache=True` (generate() does this for you); pass it
    back as `cache=` (transformers >= 5.24) or `past_key_values=` (5.17 - 5.23) to continue.
    """

    is_compileable = False

    def __init__(self, config=None, num_layers: Optional[int] = None, **kwargs):
        if num_layers is None:
            if config is None:
                raise ValueError("LRNNCache needs a config or num_layers")
            num_layers = config.num_hidden_layers
        super().__init__(layers=[LRNNCacheLayer() for _ in range(num_layers)])
        self._seen_tokens = 0

    # -- state access used by the mixers --------------------------------------------------------------
    def get_state(self, layer_idx: int) -> Optional[torch.Tensor]:
        return self.layers[layer_idx].state

    def set_state(self, layer_idx: int, state: torch.Tensor) -> None:
        self.layers[layer_idx].state = state

    def advance(self, num_tokens: int) -> None:
        """Record that one forward consumed `num_tokens` new positions (called once per forward)."""
        self._seen_tokens += num_tokens

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
