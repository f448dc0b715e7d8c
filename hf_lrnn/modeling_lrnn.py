"""The backbone shared by H-LRU and BD-LRU models (arXiv 2602.12021; shared/SPEC.md "Network").

    token embedding (no positions) -> num_hidden_layers x LRNNBlock -> final norm -> head
    LRNNBlock: x = x + mixer(norm(x)); x = x + SwiGLU(norm(x))

The two architectures differ only in the mixer's shapes and scan (`LRNNMixer.blocked`); modeling_hlru.py
and modeling_bdlru.py bind this backbone to their config classes.
"""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    SequenceClassifierOutputWithPast,
)

from .cache_lrnn import LRNNCache
from .ops import bdlru_scan, hlru_scan
from .scan_torch import bdlru_scan_torch, hlru_scan_torch

try:
    from transformers import initialization as init
except ImportError:  # transformers < 5.x layouts: plain torch init
    from torch.nn import init

# transformers 5.24 renamed the cache argument and output field `past_key_values` -> `cache`
CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


def _pick_cache(cache, past_key_values, kwargs):
    """Accept the cache under every name transformers 5.17 - 5.x passes it."""
    for candidate in (cache, past_key_values, kwargs.pop("cache_params", None)):
        if candidate is not None:
            return candidate
    return None


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def build_norm(config) -> nn.Module:
    if config.norm_type == "rmsnorm":
        return RMSNorm(config.hidden_size, eps=config.norm_eps)
    return nn.LayerNorm(config.hidden_size, eps=config.norm_eps)


class SwiGLU(nn.Module):
    """W3(silu(W1 x) * W2 x), no bias."""

    def __init__(self, config):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)  # W1
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)  # W2
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)  # W3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def _is_left_padded(mask: torch.Tensor) -> bool:
    """True when every row is zeros then ones (padding only before the first real token)."""
    return bool((mask[:, 1:] >= mask[:, :-1]).all())


def hlru_readout_window(states, initial_state, mask=None):
    """Gather the read-out window [B, T, N, m]: index k holds s_{t-k} (the k-th previous kept state).

    states [B, T, N]; initial_state [B, N, m] = (s_0, ..., s_{-m+1}) (zeros for a fresh sequence). With a mask [B, T] (bool),
    padded steps are skipped: the window at a real token reaches back over real tokens only.
    """
    B, T, N = states.shape
    m = initial_state.shape[-1]
    # E = (s_{-m+2}, ..., s_0, s_1, ..., s_T): the m-1 newest initial states, oldest first, then the new ones
    prefix = initial_state[..., : m - 1].flip(-1).transpose(1, 2).to(states.dtype)  # [B, m-1, N]
    full = torch.cat([prefix, states], dim=1)  # [B, m-1+T, N]
    if mask is None:
        if m == 1:
            return states.unsqueeze(-1)
        return torch.stack([full[:, m - 1 - k : m - 1 - k + T] for k in range(m)], dim=-1)
    count = mask.long().cumsum(1)  # real tokens up to and including t
    real_positions = torch.sort((~mask).int(), dim=1, stable=True).indices  # real positions first, in order
    e_index = (m - 2 + count).unsqueeze(-1) - torch.arange(m, device=states.device)  # [B, T, m] index into E
    e_index = e_index.clamp(min=0)
    real_j = (e_index - (m - 1)).clamp(min=0, max=T - 1)
    full_index = torch.where(
        e_index < m - 1, e_index, m - 1 + torch.gather(real_positions, 1, real_j.view(B, -1)).view(B, T, m)
    )
    gathered = torch.gather(full, 1, full_index.view(B, T * m, 1).expand(B, T * m, N))  # [B, T*m, N]
    return gathered.view(B, T, m, N).transpose(2, 3)


class LRNNMixer(nn.Module):
    """The recurrent sequence mixer: projections in, a linear scan, projection out.

    H-LRU (`blocked=False`): value v_t [N], gate logits [N, m+1]; scan keeps s_t per channel and the
        read-out sees the window [s_t, ..., s_{t-m+1}] (channel-major, index n*m + k).
    BD-LRU (`blocked=True`): value v_t [N, m], gate logits [N, m, m+1]; read-out sees h_t (index n*m + j).
    """

    def __init__(self, config, layer_idx: int, blocked: bool):
        super().__init__()
        self.layer_idx = layer_idx
        self.blocked = blocked
        self.num_units = N = config.num_units
        self.unit_size = m = config.unit_size
        self.gate_activation = config.gate_activation
        self.selective = config.selective
        self.scan_backend = config.scan_backend
        self.gate_shape = (N, m, m + 1) if blocked else (N, m + 1)
        self.value_shape = (N, m) if blocked else (N,)
        gate_numel = N * m * (m + 1) if blocked else N * (m + 1)
        self.value_proj = nn.Linear(config.hidden_size, N * m if blocked else N, bias=False)  # W_v
        if config.selective:
            self.gate_proj = nn.Linear(config.hidden_size, gate_numel, bias=True)  # W_g, b_g
        else:
            self.gate_logits = nn.Parameter(torch.rand(self.gate_shape))  # uniform [0, 1) (SPEC)
        self.out_proj = nn.Linear(N * m, config.hidden_size, bias=False)  # W_o

    def _scan(self, gates, values, initial_state, mask):
        """Run the scan; returns (states, final_state). `mask` [B, T] bool or None (all real)."""
        if mask is not None and not bool(mask.all()):
            zero_start = initial_state is None or not initial_state[~mask[:, 0]].any()
            if zero_start and _is_left_padded(mask):
                # Left padding over a zero state: zero values keep the state exactly zero on padded steps,
                # which is what the unpadded row starts from. Works on every backend.
                values = values * mask.view(*mask.shape, *([1] * (values.dim() - 2))).to(values.dtype)
            else:
                # Padding after a non-zero state, or not only on the left: skip padded steps exactly with
                # the reference scan (rare: e.g. a padded continuation of a cached state).
                scan = bdlru_scan_torch if self.blocked else hlru_scan_torch
                states, final = scan(gates, values, initial_state, self.gate_activation, mask=mask)
                return states, final, True
        scan = bdlru_scan if self.blocked else hlru_scan
        states, final = scan(
            gates,
            values,
            initial_state=initial_state,
            gate_activation=self.gate_activation,
            output_final_state=True,
            backend=self.scan_backend,
        )
        return states, final, False

    def forward(
        self,
        hidden_states: torch.Tensor,  # [B, T, d]
        attention_mask: Optional[torch.Tensor] = None,  # [B, >=T], 1 = real token
        cache: Optional[LRNNCache] = None,
    ) -> torch.Tensor:
        B, T, _ = hidden_states.shape
        values = self.value_proj(hidden_states).view(B, T, *self.value_shape)  # [B, T, N(, m)]
        if self.selective:
            gates = self.gate_proj(hidden_states).view(B, T, *self.gate_shape)  # [B, T, N, (m,) m+1]
        else:
            gates = self.gate_logits.expand(B, T, *self.gate_shape)
        mask = None if attention_mask is None else attention_mask[:, -T:].bool()
        initial_state = cache.get_state(self.layer_idx) if cache is not None else None

        states, final_state, masked = self._scan(gates, values, initial_state, mask)
        if cache is not None:
            cache.set_state(self.layer_idx, final_state)  # float32 [B, N, m]

        if self.blocked:
            readout = states.reshape(B, T, -1)  # [B, T, N*m], index n*m + j
        elif self.unit_size == 1:
            readout = states
        elif T == 1 and not masked:
            # one step (decode): the window (s_t, ..., s_{t-m+1}) is exactly the new state
            readout = final_state.reshape(B, 1, -1)  # index n*m + k holds s_{t-k}
        else:
            if initial_state is None:
                initial_state = states.new_zeros(B, self.num_units, self.unit_size)
            window = hlru_readout_window(states, initial_state, mask if masked else None)  # [B, T, N, m]
            readout = window.reshape(B, T, -1)  # index n*m + k holds s_{t-k}
        return self.out_proj(readout.to(hidden_states.dtype))


class LRNNBlock(GradientCheckpointingLayer):
    def __init__(self, config, layer_idx: int, blocked: bool):
        super().__init__()
        self.mixer_norm = build_norm(config)
        self.mixer = LRNNMixer(config, layer_idx, blocked)
        self.mlp_norm = build_norm(config)
        self.mlp = SwiGLU(config)

    def forward(self, hidden_states, attention_mask=None, cache=None, **kwargs):
        hidden_states = hidden_states + self.mixer(self.mixer_norm(hidden_states), attention_mask, cache)
        return hidden_states + self.mlp(self.mlp_norm(hidden_states))


class LRNNPreTrainedModel(PreTrainedModel):
    """Weights init, cache policy and save behaviour shared by every H-LRU / BD-LRU model class."""

    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["LRNNBlock"]
    _is_stateful = True  # generate(): no assisted decoding (a recurrent state cannot be rolled back)
    _supports_cache_class = True
    blocked = False  # BD-LRU subclasses set True
    auto_map = {}  # {"AutoConfig": "configuration_lrnn.XConfig", ...}, set by the architecture modules

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # the model builds its own LRNNCache

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)  # gate bias 0: every coefficient starts near 1/(m+1)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, (nn.LayerNorm, RMSNorm)):
            init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                init.zeros_(module.bias)
        elif isinstance(module, LRNNMixer) and not module.selective:
            init.uniform_(module.gate_logits, 0.0, 1.0)

    def save_pretrained(self, save_directory, *args, **kwargs):
        # List every Auto class so the folder loads with trust_remote_code=True for all heads, not only the saved one.
        self.config.auto_map = dict(self.auto_map)
        return super().save_pretrained(save_directory, *args, **kwargs)


class LRNNModel(LRNNPreTrainedModel):
    """The bare backbone: returns the final-norm hidden states [B, T, d] (and the cache)."""

    def __init__(self, config):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=None)
        self.layers = nn.ModuleList(
            [LRNNBlock(config, layer_idx, self.blocked) for layer_idx in range(config.num_hidden_layers)]
        )
        self.norm_f = build_norm(config)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings

    def set_input_embeddings(self, new_embeddings):
        self.embeddings = new_embeddings

    def forward(
        self,
        input_ids: Optional[torch.LongTensor] = None,  # [B, T]
        attention_mask: Optional[torch.Tensor] = None,  # [B, past + T] or [B, T]
        inputs_embeds: Optional[torch.Tensor] = None,  # [B, T, d]
        cache: Optional[LRNNCache] = None,
        past_key_values: Optional[LRNNCache] = None,
        use_cache: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        **kwargs,
    ):
        cache = _pick_cache(cache, past_key_values, kwargs)
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids [B, T] or inputs_embeds [B, T, d]")
        if inputs_embeds is None:
            inputs_embeds = self.embeddings(input_ids)
        if use_cache is None:
            use_cache = cache is not None or (self.config.use_cache and not self.training)
        checkpointing = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        if checkpointing:
            use_cache, cache = False, None  # recomputation would write the state twice
        if cache is not None and not isinstance(cache, LRNNCache):
            raise ValueError(f"cache must be an LRNNCache (as returned by this model), got {type(cache).__name__}")
        if use_cache and cache is None:
            cache = LRNNCache(self.config)
        if not use_cache:
            cache = None
        B, T = inputs_embeds.shape[:2]
        if attention_mask is not None:
            if attention_mask.dim() != 2 or attention_mask.shape[0] != B or attention_mask.shape[1] < T:
                raise ValueError(
                    f"attention_mask must be [batch, >= seq_len] = [{B}, >={T}] (1 = token, 0 = padding), "
                    f"got {tuple(attention_mask.shape)}"
                )
            if bool(attention_mask[:, -T:].all()):
                attention_mask = None  # nothing padded: take the fast path

        hidden_states = inputs_embeds
        all_hidden_states = () if output_hidden_states else None
        for layer in self.layers:
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            hidden_states = layer(hidden_states, attention_mask=attention_mask, cache=cache)
        hidden_states = self.norm_f(hidden_states)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)
        if cache is not None:
            cache.advance(T)

        output = BaseModelOutputWithPast(
            last_hidden_state=hidden_states, hidden_states=all_hidden_states, **{CACHE_FIELD: cache}
        )
        return output if return_dict else output.to_tuple()


class LRNNWithHead(LRNNPreTrainedModel):
    """A backbone (`self.model`) under a task head; subclasses add the head and call `post_init()`."""

    base_model_class = LRNNModel

    def __init__(self, config):
        super().__init__(config)
        self.model = self.base_model_class(config)

    def get_input_embeddings(self):
        return self.model.embeddings

    def set_input_embeddings(self, new_embeddings):
        self.model.embeddings = new_embeddings

    def run_backbone(self, input_ids, attention_mask, inputs_embeds, cache, past_key_values, use_cache,
                     output_hidden_states, kwargs):
        return self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            cache=_pick_cache(cache, past_key_values, kwargs),
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )


class LRNNForCausalLM(LRNNWithHead, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embeddings.weight"}

    def __init__(self, config):
        super().__init__(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def _prepare_cache_for_generation(self, generation_config, model_kwargs, *args, **kwargs):
        # Put an empty LRNNCache in place before prefill so that prefill_chunk_size (which needs a cache) works;
        # the model fills it lazily with the right (beam-expanded) batch size.
        if not any(model_kwargs.get(name) is not None for name in ("cache", "past_key_values", "cache_params")):
            if generation_config.use_cache is not False:
                model_kwargs[CACHE_FIELD] = LRNNCache(self.config)
                return None
        return super()._prepare_cache_for_generation(generation_config, model_kwargs, *args, **kwargs)

    def forward(
        self,
        input_ids: Optional[torch.LongTensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        inputs_embeds: Optional[torch.Tensor] = None,
        cache: Optional[LRNNCache] = None,
        past_key_values: Optional[LRNNCache] = None,
        labels: Optional[torch.LongTensor] = None,  # [B, T]; -100 = ignored; shifted inside
        use_cache: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        logits_to_keep=0,
        **kwargs,
    ):
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.run_backbone(input_ids, attention_mask, inputs_embeds, cache, past_key_values, use_cache,
                                    output_hidden_states, kwargs)
        hidden_states = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, keep, :])  # [B, kept, vocab]
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        output = CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            **{CACHE_FIELD: getattr(outputs, CACHE_FIELD)},
        )
        return output if return_dict else output.to_tuple()


class LRNNForSequenceClassification(LRNNWithHead):
    """Backbone + linear `score` head on the last real token (last 1 in attention_mask, else last non-pad)."""

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.score = nn.Linear(config.hidden_size, config.num_labels, bias=False)
        self.post_init()

    def forward(
        self,
        input_ids: Optional[torch.LongTensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        inputs_embeds: Optional[torch.Tensor] = None,
        cache: Optional[LRNNCache] = None,
        past_key_values: Optional[LRNNCache] = None,
        labels: Optional[torch.LongTensor] = None,  # [B] class ids, or [B, num_labels] for regression/multi-label
        use_cache: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        **kwargs,
    ):
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.run_backbone(input_ids, attention_mask, inputs_embeds, cache, past_key_values, use_cache,
                                    output_hidden_states, kwargs)
        hidden_states = outputs.last_hidden_state
        logits = self.score(hidden_states)  # [B, T, num_labels]
        B, T = logits.shape[:2]
        positions = torch.arange(T, device=logits.device)
        if attention_mask is not None:
            last = (positions * attention_mask[:, -T:].to(positions.device).long()).argmax(-1)
        elif input_ids is not None and self.config.pad_token_id is not None:
            last = (positions * (input_ids != self.config.pad_token_id).long()).argmax(-1)
        else:
            last = torch.full((B,), T - 1, device=logits.device)
        pooled_logits = logits[torch.arange(B, device=logits.device), last]  # [B, num_labels]
        loss = None
        if labels is not None:
            loss = self.loss_function(labels=labels, pooled_logits=pooled_logits, config=self.config, **kwargs)
        output = SequenceClassifierOutputWithPast(
            loss=loss,
            logits=pooled_logits,
            hidden_states=outputs.hidden_states,
            **{CACHE_FIELD: getattr(outputs, CACHE_FIELD)},
        )
        return output if return_dict else output.to_tuple()
