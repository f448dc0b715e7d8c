import os

import pytest
import torch

# Tests run on CPU; the reference backend unless a test asks for Triton explicitly. Without CUDA, Triton
# kernels run in its interpreter, which must be switched on before anything imports triton (hf_lrnn does).
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import hf_lrnn  # noqa: E402  (registers the Auto classes)

ARCHS = {
    "hlru": (hf_lrnn.HLRUConfig, "num_channels", "order", hf_lrnn.HLRUModel, hf_lrnn.HLRUForCausalLM,
             hf_lrnn.HLRUForSequenceClassification),
    "bdlru": (hf_lrnn.BDLRUConfig, "num_blocks", "block_size", hf_lrnn.BDLRUModel, hf_lrnn.BDLRUForCausalLM,
              hf_lrnn.BDLRUForSequenceClassification),
}


def tiny_config(arch="bdlru", m=2, num_units=5, **overrides):
    config_class, units_field, size_field = ARCHS[arch][:3]
    fields = dict(vocab_size=37, hidden_size=16, num_hidden_layers=2, intermediate_size=32, pad_token_id=0,
                  bos_token_id=1, eos_token_id=2)
    fields.update({units_field: num_units, size_field: m})
    fields.update(overrides)
    return config_class(**fields)


def tiny_model(arch="bdlru", head="causal_lm", m=2, seed=0, **overrides):
    torch.manual_seed(seed)
    model_class = {"model": ARCHS[arch][3], "causal_lm": ARCHS[arch][4], "classification": ARCHS[arch][5]}[head]
    return model_class(tiny_config(arch, m, **overrides)).eval()


@pytest.fixture(params=["hlru", "bdlru"])
def arch(request):
    return request.param


def tiny_tokenizer(vocab_size=37):
    """A word-level tokenizer over tokens w3..w{vocab_size-1} plus <pad>/<s>/</s> (ids 0, 1, 2)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, vocab_size)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", padding_side="left"
    )
