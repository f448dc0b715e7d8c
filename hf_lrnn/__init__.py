"""hf_lrnn: H-LRU and BD-LRU linear recurrent networks (arXiv 2602.12021) for Hugging Face transformers.

Importing the package registers both architectures with the Auto classes, so
`AutoModelForCausalLM.from_pretrained(folder)` works without trust_remote_code; the compression auto-encoder
head (MAD) has its own Auto class, `hf_lrnn.AutoModelForCompression`.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
)

from . import ops
from .auto_lrnn import AutoModelForCompression
from .cache_lrnn import LRNNCache
from .configuration_lrnn import BDLRUConfig, HLRUConfig, LRNNConfig
from .modeling_bdlru import (
    BDLRUForCausalLM,
    BDLRUForCompression,
    BDLRUForSequenceClassification,
    BDLRUModel,
    BDLRUPreTrainedModel,
)
from .modeling_hlru import (
    HLRUForCausalLM,
    HLRUForCompression,
    HLRUForSequenceClassification,
    HLRUModel,
    HLRUPreTrainedModel,
)
from .ops import bdlru_scan, bdlru_scan_time_last, hlru_scan, hlru_scan_time_last

__version__ = "0.1.0"

for _config, _model, _causal_lm, _classifier, _compression in (
    (HLRUConfig, HLRUModel, HLRUForCausalLM, HLRUForSequenceClassification, HLRUForCompression),
    (BDLRUConfig, BDLRUModel, BDLRUForCausalLM, BDLRUForSequenceClassification, BDLRUForCompression),
):
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoModel.register(_config, _model, exist_ok=True)
    AutoModelForCausalLM.register(_config, _causal_lm, exist_ok=True)
    AutoModelForSequenceClassification.register(_config, _classifier, exist_ok=True)
    AutoModelForCompression.register(_config, _compression, exist_ok=True)

__all__ = [
    "ops",
    "hlru_scan",
    "bdlru_scan",
    "hlru_scan_time_last",
    "bdlru_scan_time_last",
    "LRNNCache",
    "LRNNConfig",
    "HLRUConfig",
    "BDLRUConfig",
    "HLRUPreTrainedModel",
    "HLRUModel",
    "HLRUForCausalLM",
    "HLRUForSequenceClassification",
    "HLRUForCompression",
    "BDLRUPreTrainedModel",
    "BDLRUModel",
    "BDLRUForCausalLM",
    "BDLRUForSequenceClassification",
    "BDLRUForCompression",
    "AutoModelForCompression",
]
