"""BD-LRU models: N blocks, each a dense block_size x block_size transition with row-wise L1-normalised gates.

    h_t[n] = A_t[n] @ h_{t-1}[n] + g_t[n] * v_t[n]      rows of [A_t | g_t] = normalise(W_g x_t + b_g)
    y_t = W_o vec(h_t)

The backbone, cache and heads are shared with H-LRU (modeling_lrnn.py); this module binds them to
`BDLRUConfig`.
"""

from transformers import GenerationMixin

from .configuration_lrnn import BDLRUConfig
from .modeling_lrnn import (
    LRNNForCausalLM,
    LRNNForCompression,
    LRNNForSequenceClassification,
    LRNNModel,
    LRNNPreTrainedModel,
)

AUTO_MAP = {
    "AutoConfig": "configuration_lrnn.BDLRUConfig",
    "AutoModel": "modeling_bdlru.BDLRUModel",
    "AutoModelForCausalLM": "modeling_bdlru.BDLRUForCausalLM",
    "AutoModelForSequenceClassification": "modeling_bdlru.BDLRUForSequenceClassification",
    "AutoModelForCompression": "modeling_bdlru.BDLRUForCompression",  # hf_lrnn.AutoModelForCompression
}


class BDLRUPreTrainedModel(LRNNPreTrainedModel):
    config_class = BDLRUConfig
    auto_map = AUTO_MAP
    blocked = True


class BDLRUModel(BDLRUPreTrainedModel, LRNNModel):
    """BD-LRU backbone: input_ids [B, T] -> last_hidden_state [B, T, d] (+ LRNNCache)."""


class BDLRUForCausalLM(BDLRUPreTrainedModel, LRNNForCausalLM, GenerationMixin):
    """BD-LRU language model (backbone + tied LM head); supports generate().

    GenerationMixin is listed among the own bases (as transformers' Mamba does): transformers checks for it
    directly on generative models.
    """

    base_model_class = BDLRUModel


class BDLRUForSequenceClassification(BDLRUPreTrainedModel, LRNNForSequenceClassification):
    """BD-LRU with a classification head on the last real token."""

    base_model_class = BDLRUModel


class BDLRUForCompression(BDLRUPreTrainedModel, LRNNForCompression):
    """BD-LRU compression auto-encoder (MAD): decode the whole input from the last token's hidden state."""

    base_model_class = BDLRUModel


BDLRUConfig.register_for_auto_class()
BDLRUModel.register_for_auto_class("AutoModel")
BDLRUForCausalLM.register_for_auto_class("AutoModelForCausalLM")
BDLRUForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
BDLRUForCompression.register_for_auto_class("AutoModelForCompression")

__all__ = ["BDLRUPreTrainedModel", "BDLRUModel", "BDLRUForCausalLM", "BDLRUForSequenceClassification",
           "BDLRUForCompression"]
