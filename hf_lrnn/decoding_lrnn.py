"""Decode steps captured in CUDA graphs, replayed once per new token (as mamba-ssm's utils/generation.py does for
Mamba).

A decode step of H-LRU / BD-LRU is a fixed sequence of small kernels (embedding, per layer: norms, projections, one
scan step, the MLP; the LM head) whose shapes depend only on the batch size, and whose recurrent state has a fixed
size: once captured, a step costs one graph launch instead of hundreds of kernel launches from Python.

`CapturedDecodeStep` owns, for one batch size, the input buffer [B, 1] and one state tensor [B, N, m] per layer, and
the graph that reads and writes them. A cache that decodes through it is bound to it: its layers' states *become*
those tensors (copied in once, or again after `reorder_cache` and the like replaced them), so a step copies nothing.
A cache that is no longer bound gets its own copies back first, so two generations that alternate stay apart.
`LRNNForCausalLM.generate()` uses these on CUDA by default (`decode_graph=False` turns them off).
"""

import weakref
from typing import Callable, Optional

import torch

from .cache_lrnn import LRNNCache


class CudaGraph:
    """Capture `step()` once in a CUDA graph (after warm-up runs on a side stream), then replay it.

    Capture and replay run with `device` as the current device: `torch.cuda.graph` captures on a stream of the
    current device, which must be the one the tensors (and so the kernels) are on, e.g. cuda:1 while cuda:0 is
    current. `pool` is a memory pool shared with the other graphs of the same device (None: a new one)."""

    def __init__(self, device: torch.device, pool=None):
        self.device = torch.device(device)
        with torch.cuda.device(self.device):
            self.pool = torch.cuda.graph_pool_handle() if pool is None else pool
        self.graph = None

    def capture(self, step: Callable[[], torch.Tensor]) -> torch.Tensor:
        with torch.cuda.device(self.device):
            stream = torch.cuda.Stream(self.device)
            stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(stream):
                for _ in range(2):  # compiles the Triton kernels and settles the allocator outside the capture
                    step()
            torch.cuda.current_stream(self.device).wait_stream(stream)
            self.graph = torch.cuda.CUDAGraph()
            # an explicit stream: torch.cuda.graph's default capture stream is made once per process, on the device
            # that was current at the first capture, and a capture on another device would record nothing
            with torch.cuda.graph(self.graph, pool=self.pool, stream=stream):
                output = step()
        return output

    def replay(self) -> None:
        if torch.cuda.current_device() == self.device.index:  # the common case, without the context manager's cost
            self.graph.replay()
        else:
            with torch.cuda.device(self.device):
                self.graph.replay()


class CapturedDecodeStep:
    """One decode step of `model` (an `LRNNForCausalLM`) for batches of `batch_size`, captured once.

    compile: capture the forward as torch.compile (fullgraph, static shapes) generates it, instead of the eager one:
    inductor fuses the norms, activations, residual adds and casts, at the price of a compilation at the first capture
    (per batch size). At batch <= 8 the eager step already runs them fused (decode_triton.py, which the compiled step
    calls as a custom op). The logits then differ from the eager step's in rounding."""

    def __init__(self, model, batch_size: int, device: torch.device, graph_class=CudaGraph, pool=None,
                 compile: bool = False):
        self.config = config = model.config
        self.batch_size = batch_size
        self.compiled = compile
        self.input_ids = torch.zeros(batch_size, 1, dtype=torch.long, device=device)
        shape = (batch_size, config.num_units, config.unit_size)
        self.states = [torch.zeros(shape, dtype=torch.float32, device=device) for _ in range(config.num_hidden_layers)]
        self.cache = LRNNCache(config)
        for layer, state in zip(self.cache.layers, self.states):
            layer.state = state
        self.cache.advance(1)  # a state exists: the forward takes the decode path
        self._bound: Optional[weakref.ref] = None

        def forward(input_ids, cache):
            return model(input_ids=input_ids, cache=cache, use_cache=True, return_dict=True,
                         logits_to_keep=1).logits  # [B, 1, vocab]

        if compile:
            forward = torch.compile(forward, fullgraph=True, dynamic=False)

        def step():  # the model's decode step, eager or compiled (its captured steps switched off meanwhile)
            active, model._decode_graphs_active = model._decode_graphs_active, False
            try:
                return forward(self.input_ids, self.cache)
            finally:
                model._decode_graphs_active = active

        self.graph = graph_class(device, pool)
        with torch.no_grad():
            self.logits = self.graph.capture(step)

    def _bind(self, cache: LRNNCache) -> None:
        """Make `cache`'s states this step's state tensors (copying its current values in where they are not yet)."""
        previous = self._bound() if self._bound is not None else None
        if previous is not None and previous is not cache:  # give the other cache its own copies back
            for layer, state in zip(previous.layers, self.states):
                if layer.state is state:
                    layer.state = state.clone()
        for layer, state in zip(cache.layers, self.states):
            if layer.state is not state:
                state.copy_(layer.state)
                layer.state = state
        self._bound = weakref.ref(cache)
        cache._captured_states = (self.config, self.states)

    def __call__(self, cache: LRNNCache, input_ids: torch.Tensor) -> torch.Tensor:
        """Advance `cache` by one token per row (`input_ids` [B, 1]); returns the logits [B, 1, vocab] (a copy)."""
        self._bind(cache)
        self.input_ids.copy_(input_ids)
        self.graph.replay()
        cache.advance(1)
        return self.logits.clone()  # the graph's buffer is overwritten by the next step


def can_replay(cache, input_ids: torch.Tensor, config) -> bool:
    """Whether a captured step can continue `cache` on `input_ids` (shapes only, no host sync): one new token per row,
    and a float32 state [B, N, m] on the inputs' device in every layer."""
    if not isinstance(cache, LRNNCache) or input_ids.dim() != 2 or input_ids.shape[1] != 1:
        return False
    captured_config, captured = getattr(cache, "_captured_states", None) or (None, None)
    if captured_config is config and captured[0].shape[0] == input_ids.shape[0] \
            and captured[0].device == input_ids.device \
            and all(layer.state is state for layer, state in zip(cache.layers, captured)):
        return True  # still the own tensors of a step captured for this model (the usual decode step: ~2 us)
    shape = (input_ids.shape[0], config.num_units, config.unit_size)
    return all(
        layer.state is not None and layer.state.dtype == torch.float32 and tuple(layer.state.shape) == shape
        and layer.state.device == input_ids.device
        for layer in cache.layers
    )


__all__ = ["CapturedDecodeStep", "CudaGraph", "can_replay"]
