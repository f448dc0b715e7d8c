"""H-LRU models: each of N channels mixes its last `order` states with L1-normalised selective gates.

    s_t = sum_{i=1..m} a_t^(i) s_{t-i} + g_t v_t        (a_t, g_t) = normalise(W_g x_t + b_g)
    y_t = W_o [s_t, s_{t-1}, ..., s_{t-m+1}]

The backbone, cache and heads are shared with BD-LRU (modeling_lrnn.py); this module binds them to
`HLRUConfig`.
"""

from transformers import GenerationMixin

from .configuration_lrnn import HLRUConfig
from .modeling_lrnn import (
    LRNNForCausalLM,
    LRNNForCompression,
    LRNNForSequenceClassification,
    LRNNModel,
    LRNNPreTrainedModel,
)

AUTO_MAP = {
    "AutoConfig": "configuration_lrnn.HLRUConfig",
    "AutoModel": "modeling_hlru.HLRUModel",
    "AutoModelForCausalLM": "modeling_hlru.HLRUForCausalLM",
    "AutoModelForSequenceClassification": "modeling_hlru.HLRUForSequenceClassification",
    "AutoModelForCompression": "modeling_hlru.HLRUForCompression",  # hf_lrnn.AutoModelForCompression
}


class HLRUPreTrainedModel(LRNNPreTrainedModel):
    config_class = HLRUConfig
    auto_map = AUTO_MAP


class HLRUModel(HLRUPreTrainedModel, LRNNModel):
    """H-LRU backbone: input_ids [B, T] -> last_hidden_state [B, T, d] (+ LRNNCache)."""


class HLRUForCausalLM(HLRUPreTrainedModel, LRNNForCausalLM, GenerationMixin):
    """H-LRU language model (backbone + tied LM head); supports generate().

    GenerationMixin is listed among the own bases (as transformers' Mamba does): transformers checks for it
    directly on generative models.
    """

    base_model_class = HLRUModel


class HLRUForSequenceClassification(HLRUPreTrainedModel, LRNNForSequenceClassification):
    """H-LRU with a classification head on the last real token."""

    base_model_class = HLRUModel


class HLRUForCompression(HLRUPreTrainedModel, LRNNForCompression):
    """H-LRU compression auto-encoder (MAD): decode the whole input from the last token's hidden state."""

    base_model_class = HLRUModel


HLRUConfig.register_for_auto_class()
HLRUModel.register_for_auto_class("AutoModel")
HLRUForCausalLM.register_for_auto_class("AutoModelForCausalLM")
HLRUForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
HLRUForCompression.register_for_auto_class("AutoModelForCompression")

__all__ = ["HLRUPreTrainedModel", "HLRUModel", "HLRUForCausalLM", "HLRUForSequenceClassification",
           "HLRUForCompression"]
