"""Bad input to every public entry point gives a ValueError or TypeError that names the argument, the value and what
was expected (or, for empty batches and sequences, the empty result), grouped by entry point:

1. the scans `hlru_scan` / `bdlru_scan`    4. `generate()`                  7. the training checkpoints
2. the configs `HLRUConfig` / `BDLRUConfig`  5. the cache `LRNNCache`
3. the models' `forward`                     6. the scripts (train.py's parsers, evaluate.py, push_to_hub.py)

Another device is stood in for by "meta". Kills in the middle of a save are in tests/test_atomic_save.py.
"""

import json
import logging
import os
import subprocess
import sys
import warnings

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, DynamicCache

import hf_lrnn
from helpers import archs, load_script, tiny_config, tiny_model, tiny_tokenizer
from hf_lrnn import LRNNCache
from hf_lrnn.modeling_lrnn import CACHE_FIELD
from hf_lrnn.ops import bdlru_scan, hlru_scan

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "scripts")
VOCAB = 37  # tiny_config's vocab_size

try:
    import triton  # noqa: F401

    TRITON_OK = torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"
except ImportError:
    TRITON_OK = False
SCAN_BACKENDS = ["torch", pytest.param("triton", marks=pytest.mark.skipif(not TRITON_OK, reason="needs Triton"))]


# ====================================================================================================== 1. the scans
def scan_args(blocked, B=2, T=3, N=4, m=2):
    gates = torch.randn((B, T, N, m, m + 1) if blocked else (B, T, N, m + 1))
    values = torch.randn((B, T, N, m) if blocked else (B, T, N))
    return gates, values


def call_scan(blocked, change):
    """Run the scan on good inputs after `change(gates, values)` returned (args, kwargs)."""
    op = bdlru_scan if blocked else hlru_scan
    args, kwargs = change(*scan_args(blocked))
    return op(*args, **kwargs)


def packed(g, v, cu, **kwargs):  # B = 1 for cu_seqlens
    return (g[:1], v[:1]), dict(cu_seqlens=cu, **kwargs)


BAD_SCAN_INPUTS = [
    ("gates_list", lambda g, v: ((g.tolist(), v), {}), "gates must be a torch.Tensor, got list"),
    ("values_numpy", lambda g, v: ((g, v.numpy()), {}), "values must be a torch.Tensor, got ndarray"),
    ("gates_int", lambda g, v: ((g.int(), v), {}), r"gates must be float32.*got torch.int32"),
    ("values_bool", lambda g, v: ((g, v.bool()), {}), r"values must be float32.*got torch.bool"),
    ("gates_complex", lambda g, v: ((g.cfloat(), v), {}), r"gates must be float32.*complex64"),
    ("gates_rank", lambda g, v: ((g[..., 0], v), {}), r"gates must have shape \[B, T, N"),
    ("values_rank", lambda g, v: ((g, v[..., None]), {}), r"values must have shape \[B, T, N"),
    ("gates_m_plus_1_is_1", lambda g, v: ((g[..., :1], v), {}), r"m\+1 and must be >= 2"),
    ("values_wrong_N", lambda g, v: ((g, torch.cat([v, v], 2)), {}), r"values must have shape .* to match gates"),
    ("values_wrong_batch", lambda g, v: ((g, v[:1]), {}), r"values must have shape .* to match gates"),
    ("values_wrong_T", lambda g, v: ((g, v[:, :2]), {}), r"values must have shape .* to match gates"),
    ("gates_on_another_device", lambda g, v: ((g.to("meta"), v), {}), "gates are on meta but values on cpu"),
    ("initial_state_list", lambda g, v: ((g, v), dict(initial_state=[[0.0]])), "initial_state must be a torch.Tensor"),
    ("initial_state_shape", lambda g, v: ((g, v), dict(initial_state=torch.zeros(2, 4, 3))),
     r"initial_state must have shape \[B, N, m\] = \(2, 4, 2\), got \(2, 4, 3\)"),
    ("initial_state_batch", lambda g, v: ((g, v), dict(initial_state=torch.zeros(1, 4, 2))), "initial_state must have shape"),
    ("initial_state_int", lambda g, v: ((g, v), dict(initial_state=torch.zeros(2, 4, 2, dtype=torch.long))),
     "initial_state must be a floating tensor, got torch.int64"),
    ("initial_state_on_another_device", lambda g, v: ((g, v), dict(initial_state=torch.zeros(2, 4, 2, device="meta"))),
     "initial_state is on meta but values on cpu"),
    ("gate_activation_unknown", lambda g, v: ((g, v), dict(gate_activation="gelu")),
     "gate_activation must be one of .*'gelu'"),
    ("gate_activation_case", lambda g, v: ((g, v), dict(gate_activation="Softmax")), "gate_activation must be one of"),
    ("gate_activation_none", lambda g, v: ((g, v), dict(gate_activation=None)), "gate_activation must be one of .*None"),
    ("backend_unknown", lambda g, v: ((g, v), dict(backend="cuda")), "backend must be one of .*'cuda'"),
    ("output_final_state_str", lambda g, v: ((g, v), dict(output_final_state="yes")),
     "output_final_state must be True or False, got 'yes'"),
    ("cu_seqlens_list", lambda g, v: packed(g, v, [0, 3]), "cu_seqlens must be a 1-D int32/int64 torch.Tensor.*list"),
    ("cu_seqlens_float", lambda g, v: packed(g, v, torch.tensor([0.0, 3.0])), "cu_seqlens must be .* got torch.float32"),
    ("cu_seqlens_2d", lambda g, v: packed(g, v, torch.tensor([[0, 3]])), r"cu_seqlens must be .* \(1, 2\)"),
    ("cu_seqlens_one_entry", lambda g, v: packed(g, v, torch.tensor([0])), r"cu_seqlens must be .*\[num_seqs\+1\]"),
    ("cu_seqlens_not_increasing", lambda g, v: packed(g, v, torch.tensor([0, 2, 1, 3])),
     r"cu_seqlens must rise from 0 to T=3, got \[0, 2, 1, 3\]"),
    ("cu_seqlens_wrong_end", lambda g, v: packed(g, v, torch.tensor([0, 2])), r"cu_seqlens must rise from 0 to T=3"),
    ("cu_seqlens_wrong_start", lambda g, v: packed(g, v, torch.tensor([1, 3])), r"cu_seqlens must rise from 0 to T=3"),
    ("cu_seqlens_batch_2", lambda g, v: ((g, v), dict(cu_seqlens=torch.tensor([0, 3]))), "batch size must be 1.*got 2"),
    ("cu_seqlens_on_another_device", lambda g, v: packed(g, v, torch.tensor([0, 3], device="meta")),
     "cu_seqlens is on meta"),
    ("cu_seqlens_initial_state_rows", lambda g, v: packed(g, v, torch.tensor([0, 1, 3]), initial_state=torch.zeros(1, 4, 2)),
     r"initial_state must have shape \[num_seqs, N, m\] = \(2, 4, 2\)"),
]


@pytest.mark.parametrize("blocked", [False, True], ids=["hlru_scan", "bdlru_scan"])
@pytest.mark.parametrize("change, message", [case[1:] for case in BAD_SCAN_INPUTS], ids=[c[0] for c in BAD_SCAN_INPUTS])
def test_scan_bad_input_raises_value_error_naming_it(blocked, change, message):
    op_name = "bdlru_scan" if blocked else "hlru_scan"
    with pytest.raises(ValueError, match=message) as caught:
        call_scan(blocked, change)
    if "backend" not in message:
        assert str(caught.value).startswith(op_name), str(caught.value)


@pytest.mark.parametrize("backend", SCAN_BACKENDS)
@pytest.mark.parametrize("blocked", [False, True], ids=["hlru_scan", "bdlru_scan"])
@pytest.mark.parametrize("B, T", [(0, 3), (2, 0), (0, 0)], ids=["B=0", "T=0", "B=0,T=0"])
def test_scan_empty_batch_or_sequence_gives_the_empty_result_and_gradients(backend, blocked, B, T):
    op = bdlru_scan if blocked else hlru_scan
    gates, values = scan_args(blocked, B=B, T=T)
    gates.requires_grad_(True)
    values.requires_grad_(True)
    h0 = torch.randn(B, 4, 2, requires_grad=True)
    states, final = op(gates, values, h0, output_final_state=True, backend=backend)
    assert states.shape == values.shape and final.shape == (B, 4, 2)
    torch.testing.assert_close(final, h0.detach())  # nothing scanned: the state is the initial state
    d_final = torch.randn(B, 4, 2)
    grads = torch.autograd.grad((states.sum(), (final * d_final).sum()), (gates, values, h0))  # all reached, none None
    assert [g.shape for g in grads] == [gates.shape, values.shape, h0.shape]
    assert not grads[0].any() and not grads[1].any()
    torch.testing.assert_close(grads[2], d_final)


@pytest.mark.parametrize("backend", SCAN_BACKENDS)
def test_scan_packed_empty_sequences_keep_their_initial_state(backend):
    gates, values = scan_args(False, B=1, T=3)
    h0 = torch.randn(3, 4, 2)
    cu = torch.tensor([0, 0, 3, 3])  # sequence 0 and 2 are empty
    states, final = hlru_scan(gates, values, h0, output_final_state=True, backend=backend, cu_seqlens=cu)
    alone, alone_final = hlru_scan(gates, values, h0[1:2], output_final_state=True, backend=backend)
    torch.testing.assert_close(states, alone)
    torch.testing.assert_close(final[[0, 2]], h0[[0, 2]])
    torch.testing.assert_close(final[1:2], alone_final)


# ===================================================================================================== 2. the configs
BAD_CONFIG_VALUES = [
    ("vocab_size_str", "hlru", dict(vocab_size="100"), r"vocab_size must be an integer >= 1, got '100'"),
    ("vocab_size_float", "bdlru", dict(vocab_size=100.0), r"vocab_size must be an integer >= 1, got 100.0"),
    ("vocab_size_bool", "hlru", dict(vocab_size=True), r"vocab_size must be an integer >= 1, got True"),
    ("hidden_size_0", "bdlru", dict(hidden_size=0), r"hidden_size must be an integer >= 1, got 0"),
    ("hidden_size_negative", "hlru", dict(hidden_size=-8), r"hidden_size must be an integer >= 1, got -8"),
    ("num_hidden_layers_0", "hlru", dict(num_hidden_layers=0), r"num_hidden_layers must be an integer >= 1, got 0"),
    ("order_0", "hlru", dict(order=0), r"order must be an integer >= 1, got 0"),
    ("block_size_float", "bdlru", dict(block_size=2.0), r"block_size must be an integer >= 1, got 2.0"),
    ("num_channels_0", "hlru", dict(num_channels=0), r"num_channels must be an integer >= 1, got 0"),
    ("hidden_size_not_divisible", "hlru", dict(hidden_size=10, order=3, num_channels=None),
     r"needs order \(3\) to divide hidden_size \(10\)"),
    ("block_size_not_dividing", "bdlru", dict(hidden_size=10, block_size=4, num_blocks=None),
     r"needs block_size \(4\) to divide hidden_size \(10\)"),
    ("intermediate_size_0", "bdlru", dict(intermediate_size=0), r"intermediate_size must be an integer >= 1, got 0"),
    ("gate_activation_unknown", "hlru", dict(gate_activation="gelu"), r"gate_activation must be one of .*'gelu'"),
    ("norm_type_unknown", "bdlru", dict(norm_type="batchnorm"), r"norm_type must be one of .*'batchnorm'"),
    ("scan_backend_unknown", "hlru", dict(scan_backend="cuda"), r"scan_backend must be one of .*'cuda'"),
    ("selective_str", "bdlru", dict(selective="yes"), r"selective must be True or False, got 'yes'"),
    ("use_cache_str", "hlru", dict(use_cache="no"), r"use_cache must be True or False, got 'no'"),
    ("tie_word_embeddings_int", "bdlru", dict(tie_word_embeddings=0), r"tie_word_embeddings must be True or False, got 0"),
    ("norm_eps_0", "hlru", dict(norm_eps=0.0), r"norm_eps must be a finite number > 0, got 0.0"),
    ("norm_eps_inf", "bdlru", dict(norm_eps=float("inf")), r"norm_eps must be a finite number > 0, got inf"),
    ("norm_eps_str", "hlru", dict(norm_eps="1e-5"), r"norm_eps must be a finite number > 0, got '1e-5'"),
    ("initializer_range_negative", "hlru", dict(initializer_range=-0.1), r"initializer_range must be .* >= 0, got -0.1"),
    ("initializer_range_nan", "bdlru", dict(initializer_range=float("nan")), r"initializer_range must be .* got nan"),
    ("pad_token_id_outside_vocab", "hlru", dict(pad_token_id=37), r"pad_token_id must be .*vocab_size=37\), got 37"),
    ("bos_token_id_bool", "bdlru", dict(bos_token_id=True), r"bos_token_id must be .* got True"),
    ("eos_token_id_negative", "hlru", dict(eos_token_id=-1), r"eos_token_id must be .* got -1"),
    ("eos_token_id_list", "bdlru", dict(eos_token_id=[2, 99]), r"eos_token_id must be .* got \[2, 99\]"),
]


@pytest.mark.parametrize("arch, overrides, message", [c[1:] for c in BAD_CONFIG_VALUES], ids=[c[0] for c in BAD_CONFIG_VALUES])
def test_config_bad_value_raises_naming_the_field(arch, overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(arch, **overrides)


MISSPELT_KEYS = [
    ("odrer", "hlru", dict(odrer=3), "order"),
    ("block_sise", "bdlru", dict(block_sise=4), "block_size"),
    ("hiden_size", "hlru", dict(hiden_size=32), "hidden_size"),
    ("num_hidden_layer", "bdlru", dict(num_hidden_layer=4), "num_hidden_layers"),
    ("gate_actvation", "hlru", dict(gate_actvation="relu"), "gate_activation"),
    ("norm_epsilon", "bdlru", dict(norm_epsilon=1e-6), "norm_eps"),
    ("rms_norm_eps", "hlru", dict(rms_norm_eps=1e-6), "norm_eps"),
    ("vocabsize", "bdlru", dict(vocabsize=64), "vocab_size"),
    ("num_channel", "hlru", dict(num_channel=4), "num_channels"),
    ("order_on_bdlru", "bdlru", dict(order=4), "block_size"),
    ("block_size_on_hlru", "hlru", dict(block_size=4), "order"),
    ("num_channels_on_bdlru", "bdlru", dict(num_channels=4), "num_blocks"),
    ("num_blocks_on_hlru", "hlru", dict(num_blocks=4), "num_channels"),
]


@pytest.mark.parametrize("arch, overrides, meant", [c[1:] for c in MISSPELT_KEYS], ids=[c[0] for c in MISSPELT_KEYS])
def test_config_misspelt_key_raises_with_a_suggestion(arch, overrides, meant):
    (key,) = overrides
    config_class = archs()[arch][0]
    with pytest.raises(ValueError, match=rf"{config_class.__name__}: .*'{key}'.* did you mean '{meant}'\?"):
        config_class(**overrides)


class CollectWarnings(logging.Handler):
    """Records warnings of the transformers logger (which does not propagate) and of every other logger."""

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(f"{record.name}: {record.getMessage()}")

    def __enter__(self):
        for name in ("transformers", ""):
            logging.getLogger(name).addHandler(self)
        return self

    def __exit__(self, *exc):
        for name in ("transformers", ""):
            logging.getLogger(name).removeHandler(self)


# what configs saved by transformers (this release and older ones) and by generation carry besides our fields
TRANSFORMERS_KEYS = dict(
    architectures=["HLRUForCausalLM"], auto_map={"AutoConfig": "configuration_lrnn.HLRUConfig"}, torch_dtype="float32",
    _name_or_path="some/path", transformers_version="4.57.0", model_type="hlru", sep_token_id=2,
    decoder_start_token_id=1, forced_bos_token_id=None, forced_eos_token_id=2, tie_encoder_decoder=False,
    is_decoder=False, add_cross_attention=False, tokenizer_class=None, prefix=None, task_specific_params=None,
    finetuning_task=None, pruned_heads={}, torchscript=False, use_bfloat16=False, tf_legacy_loss=False,
    chunk_size_feed_forward=0, output_hidden_states=False, output_attentions=False, return_dict=True,
    problem_type=None, num_labels=2, max_length=20, min_length=0, num_beams=1, temperature=1.0, top_k=50, top_p=1.0,
    repetition_penalty=1.0, do_sample=False, early_stopping=False, bad_words_ids=None, my_own_note="anything",
)


@pytest.mark.parametrize("arch", ["hlru", "bdlru"])
def test_config_keys_of_transformers_are_not_taken_for_misspellings(arch):
    # without transformers_version, which marks a saved config.json (whose misspellings only warn): here they would raise
    skip = ("model_type", "auto_map", "architectures", "transformers_version")
    keys = {k: v for k, v in TRANSFORMERS_KEYS.items() if k not in skip}
    with CollectWarnings() as caught, warnings.catch_warnings():
        warnings.simplefilter("error")
        config = tiny_config(arch, **keys)
    assert not [m for m in caught.messages if "did you mean" in m], caught.messages
    assert config.my_own_note == "anything"  # an unrelated unknown key is kept, as transformers does


@pytest.mark.parametrize("arch", ["hlru", "bdlru"])
def test_config_save_load_round_trip_gives_no_warning(arch, tmp_path):
    model = tiny_model(arch, head="classification", num_labels=3, id2label={0: "a", 1: "b", 2: "c"})
    model.to(torch.bfloat16).save_pretrained(tmp_path / "a")
    saved = json.loads((tmp_path / "a" / "config.json").read_text())
    saved.update({k: v for k, v in TRANSFORMERS_KEYS.items() if k not in saved and k != "num_labels"})
    (tmp_path / "a" / "config.json").write_text(json.dumps(saved))  # + keys of older releases and generation
    with CollectWarnings() as caught:
        config = AutoConfig.from_pretrained(tmp_path / "a")
        type(model).from_pretrained(tmp_path / "a")
    assert caught.messages == []
    assert type(config) is archs()[arch][0] and config.num_labels == 3


def test_config_loaded_with_a_misspelt_key_warns_and_still_loads(tmp_path):
    tiny_model("hlru").save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**saved, "odrer": 3}))
    with CollectWarnings() as caught:
        config = AutoConfig.from_pretrained(tmp_path)
    assert config.order == 2
    assert any("'odrer'" in m and "did you mean 'order'" in m for m in caught.messages), caught.messages


# ================================================================================================ 3. models' forward
IDS = torch.randint(3, VOCAB, (2, 5), generator=torch.Generator().manual_seed(0))


def embeds(*shape, **kw):
    return torch.randn(*shape, **kw)


BAD_FORWARD_INPUTS = [
    ("input_ids_list", dict(input_ids=IDS.tolist()), TypeError, "input_ids must be a torch.Tensor, got list"),
    ("input_ids_tuple", dict(input_ids=tuple(IDS.tolist())), TypeError, "input_ids must be a torch.Tensor, got tuple"),
    ("input_ids_numpy", dict(input_ids=IDS.numpy()), TypeError, "input_ids must be a torch.Tensor, got ndarray"),
    ("input_ids_float", dict(input_ids=IDS.float()), TypeError, r"input_ids must be an int64 .* got torch.float32"),
    ("input_ids_bool", dict(input_ids=IDS.bool()), TypeError, r"input_ids must be an int64 .* got torch.bool"),
    ("input_ids_uint8", dict(input_ids=IDS.to(torch.uint8)), TypeError, r"input_ids must be an int64 .* torch.uint8"),
    ("input_ids_1d", dict(input_ids=IDS[0]), ValueError, r"input_ids must be .*\[batch, seq_len\], got torch.int64 \(5,\)"),
    ("input_ids_3d", dict(input_ids=IDS[None]), ValueError, r"input_ids must be .*\[batch, seq_len\].*\(1, 2, 5\)"),
    ("input_ids_0d", dict(input_ids=IDS[0, 0]), ValueError, r"input_ids must be .*\[batch, seq_len\].*\(\)"),
    ("input_ids_negative", dict(input_ids=IDS - 10), ValueError, r"input_ids must be token ids in \[0, vocab_size=37\)"),
    ("input_ids_equal_vocab", dict(input_ids=torch.full((1, 3), VOCAB)), ValueError,
     r"input_ids must be token ids in \[0, vocab_size=37\), got 3 outside it \(smallest 37, largest 37\)"),
    ("input_ids_on_another_device", dict(input_ids=IDS.to("meta")), ValueError,
     "input_ids is on meta but the model is on cpu"),
    ("input_ids_and_inputs_embeds", dict(input_ids=IDS, inputs_embeds=embeds(2, 5, 16)), ValueError, "exactly one of"),
    ("neither_input_ids_nor_inputs_embeds", dict(), ValueError, "exactly one of input_ids"),
    ("inputs_embeds_list", dict(inputs_embeds=[[[0.0] * 16]]), TypeError, "inputs_embeds must be a torch.Tensor, got list"),
    ("inputs_embeds_wrong_width", dict(inputs_embeds=embeds(2, 5, 15)), ValueError,
     r"inputs_embeds must be .*\[batch, seq_len, hidden_size=16\], got torch.float32 \(2, 5, 15\)"),
    ("inputs_embeds_2d", dict(inputs_embeds=embeds(5, 16)), ValueError, r"inputs_embeds must be .*hidden_size=16.*\(5, 16\)"),
    ("inputs_embeds_4d", dict(inputs_embeds=embeds(1, 2, 5, 16)), ValueError, r"inputs_embeds must be .*\(1, 2, 5, 16\)"),
    ("inputs_embeds_int", dict(inputs_embeds=torch.ones(2, 5, 16, dtype=torch.long)), TypeError,
     r"inputs_embeds must be a floating tensor .* torch.int64"),
    ("inputs_embeds_on_another_device", dict(inputs_embeds=embeds(2, 5, 16, device="meta")), ValueError,
     "inputs_embeds is on meta but the model is on cpu"),
    ("attention_mask_list", dict(input_ids=IDS, attention_mask=[[1] * 5] * 2), TypeError,
     "attention_mask must be a torch.Tensor, got list"),
    ("attention_mask_wrong_batch", dict(input_ids=IDS, attention_mask=torch.ones(3, 5)), ValueError,
     r"attention_mask must be \[batch, >= seq_len\] = \[2, >=5\] .* got \(3, 5\)"),
    ("attention_mask_too_short", dict(input_ids=IDS, attention_mask=torch.ones(2, 4)), ValueError,
     r"attention_mask must be \[batch, >= seq_len\].* got \(2, 4\)"),
    ("attention_mask_1d", dict(input_ids=IDS, attention_mask=torch.ones(5)), ValueError, r"attention_mask must be .*\(5,\)"),
    ("attention_mask_4d", dict(input_ids=IDS, attention_mask=torch.ones(2, 1, 5, 5)), ValueError,
     r"attention_mask must be .*\(2, 1, 5, 5\)"),
    ("attention_mask_value_2", dict(input_ids=IDS, attention_mask=torch.full((2, 5), 2)), ValueError,
     r"attention_mask must hold only 1 \(token\) and 0 \(padding\), got values such as \[2\]"),
    ("attention_mask_value_minus_1", dict(input_ids=IDS, attention_mask=torch.tensor([[1, 1, 1, 1, -1]] * 2)), ValueError,
     r"attention_mask must hold only .* \[-1\]"),
    ("attention_mask_value_half", dict(input_ids=IDS, attention_mask=torch.tensor([[0.5, 1, 1, 1, 1]] * 2)), ValueError,
     r"attention_mask must hold only .* \[0.5\]"),
    ("attention_mask_on_another_device", dict(input_ids=IDS, attention_mask=torch.ones(2, 5, device="meta")), ValueError,
     "attention_mask is on meta but the model is on cpu"),
    ("use_cache_str", dict(input_ids=IDS, use_cache="yes"), TypeError, "use_cache must be True, False or None, got 'yes'"),
    ("cache_dict", dict(input_ids=IDS, cache={}), ValueError, "cache must be an LRNNCache .* got dict"),
    ("cache_dynamic", dict(input_ids=IDS, cache=DynamicCache()), ValueError, "cache must be an LRNNCache .* got DynamicCache"),
]


@pytest.mark.parametrize("arch", ["hlru", "bdlru"])
@pytest.mark.parametrize("inputs, error, message", [c[1:] for c in BAD_FORWARD_INPUTS], ids=[c[0] for c in BAD_FORWARD_INPUTS])
def test_forward_bad_input_raises_naming_it(arch, inputs, error, message):
    model = tiny_model(arch)
    with pytest.raises(error, match=message):
        model(**inputs)


@pytest.mark.parametrize("head", ["model", "classification"])
def test_every_head_checks_its_input(head):
    model = tiny_model("bdlru", head=head)
    with pytest.raises(ValueError, match=r"input_ids must be token ids in \[0, vocab_size=37\)"):
        model(IDS + VOCAB)
    with pytest.raises(ValueError, match="inputs_embeds must be"):
        model(inputs_embeds=embeds(2, 5, 8))


def test_training_forwards_check_token_ids_until_one_passes(monkeypatch):
    """The ids check reads a flag back from the device (a host sync, which empties the GPU's launch queue at every
    training step): a training forward checks until one has passed, eval and no-grad forwards always check."""
    model = tiny_model("hlru").train()
    reads = []
    tolist = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda self: reads.append(self.shape) or tolist(self))
    with pytest.raises(ValueError, match=r"input_ids must be token ids in \[0, vocab_size=37\)"):
        model(IDS + VOCAB)  # the first training forward: checked
    assert len(reads) == 1 and not model.model.token_ids_checked_in_training
    model(IDS, labels=IDS).loss.backward()  # passes: later training forwards skip the check
    assert model.model.token_ids_checked_in_training and len(reads) == 2
    model(IDS, labels=IDS)
    assert len(reads) == 2  # no host read
    with torch.no_grad(), pytest.raises(ValueError, match="input_ids must be token ids"):
        model(IDS + VOCAB)  # no gradients (e.g. evaluation inside a training run): checked
    with pytest.raises(ValueError, match="input_ids must be token ids"):
        model.eval()(IDS - 40)  # eval mode: checked


def test_compression_head_checks_its_input():
    model = hf_lrnn.AutoModelForCompression.from_config(tiny_config("hlru")).eval()
    with pytest.raises(TypeError, match="input_ids must be a torch.Tensor"):
        model(IDS.tolist())
    with pytest.raises(ValueError, match="attention_mask must hold only"):
        model(IDS, attention_mask=torch.full_like(IDS, 3))


@pytest.mark.parametrize("arch", ["hlru", "bdlru"])
def test_forward_accepts_what_is_valid(arch):
    model = tiny_model(arch)
    reference = model(IDS).logits
    torch.testing.assert_close(model(IDS.int()).logits, reference)  # int32 ids
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    masked = model(IDS, attention_mask=mask).logits
    for same in (mask.bool(), mask.float()):  # a bool or float mask of 0/1
        torch.testing.assert_close(model(IDS, attention_mask=same).logits, masked)
    embeddings = model.get_input_embeddings()(IDS)
    torch.testing.assert_close(model(inputs_embeds=embeddings.double()).logits, reference)  # cast to the model's dtype


@pytest.mark.parametrize("labels", [IDS[:, :3], IDS[0], IDS.float(), IDS.tolist()], ids=["short", "1d", "float", "list"])
def test_forward_labels_of_the_wrong_shape_or_dtype(labels):
    with pytest.raises((ValueError, TypeError), match="labels"):
        tiny_model("hlru")(IDS, labels=labels)


def test_forward_logits_to_keep_of_the_wrong_type():
    with pytest.raises(TypeError, match="logits_to_keep"):
        tiny_model("hlru")(IDS, logits_to_keep="3")


@pytest.mark.parametrize("arch", ["hlru", "bdlru"])
@pytest.mark.parametrize("B, T", [(0, 5), (2, 0), (0, 0)], ids=["B=0", "T=0", "B=0,T=0"])
def test_forward_empty_batch_or_sequence_gives_the_empty_result(arch, B, T):
    model = tiny_model(arch).train()
    ids = torch.randint(3, VOCAB, (B, T))
    out = model(ids, labels=ids, output_hidden_states=True)
    assert out.logits.shape == (B, T, VOCAB)
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1
    assert out.loss.item() == 0.0  # nothing scored: 0, not NaN
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    inputs_embeds = torch.randn(B, T, 16, requires_grad=True)
    (grad,) = torch.autograd.grad(model(inputs_embeds=inputs_embeds).logits.sum(), inputs_embeds)
    assert grad.shape == (B, T, 16)
    backbone = tiny_model(arch, head="model")
    assert backbone(ids, attention_mask=torch.ones(B, T)).last_hidden_state.shape == (B, T, 16)


@pytest.mark.parametrize("arch", ["hlru", "bdlru"])
def test_forward_empty_continuation_leaves_the_cache_as_it_was(arch):
    model = tiny_model(arch)
    cache = getattr(model(IDS, use_cache=True), CACHE_FIELD)
    states = [s.clone() for s in cache.states]
    out = model(IDS[:, :0], cache=cache)
    assert out.logits.shape == (2, 0, VOCAB) and getattr(out, CACHE_FIELD) is cache
    assert cache.get_seq_length() == 5 and all(torch.equal(a, b) for a, b in zip(cache.states, states))


class CountHostReads:
    """Counts the tensor -> Python reads (each one a device sync on a GPU) made while it is active."""

    NAMES = ("item", "tolist", "__bool__")

    def __enter__(self):
        self.count = 0
        self.saved = {name: getattr(torch.Tensor, name) for name in self.NAMES}
        for name, original in self.saved.items():
            def counting(tensor, *args, _original=original, **kwargs):
                self.count += 1
                return _original(tensor, *args, **kwargs)

            setattr(torch.Tensor, name, counting)
        return self

    def __exit__(self, *exc):
        for name, original in self.saved.items():
            setattr(torch.Tensor, name, original)


@pytest.mark.parametrize("arch", ["hlru", "bdlru"])
def test_value_checks_read_the_device_once_on_the_prompt_and_never_on_a_decode_step(arch):
    model = tiny_model(arch)
    with CountHostReads() as prompt:
        cache = getattr(model(IDS, use_cache=True), CACHE_FIELD)
    assert prompt.count == 1  # the token-id range check
    with CountHostReads() as step:
        model(IDS[:, :1], cache=cache)
    assert step.count == 0


# ========================================================================================================= 4. generate
def other_cache(arch, batch=2, **overrides):
    model = tiny_model(arch, **overrides)
    return getattr(model(torch.randint(3, VOCAB, (batch, 4)), use_cache=True), CACHE_FIELD)


FOREIGN_CACHES = [
    ("other_architecture", lambda arch: other_cache("bdlru" if arch == "hlru" else "hlru"),
     r"cache: this LRNNCache belongs to another model .*model_type"),
    ("other_layer_count", lambda arch: other_cache(arch, num_hidden_layers=3),
     r"cache: this LRNNCache has 3 layers but the model has num_hidden_layers=2"),
    ("other_state_width_N", lambda arch: other_cache(arch, num_units=4),
     r"another model .*N \(num_channels / num_blocks\) 4 vs 5"),
    ("other_order_or_block_size", lambda arch: other_cache(arch, m=3), r"another model .*m \(order / block_size\) 3 vs 2"),
    ("other_batch_size", lambda arch: other_cache(arch, batch=1), r"cache: layer 0 holds states for a batch of 1 .* 2 rows"),
    ("empty_cache_other_layer_count", lambda arch: LRNNCache(num_layers=5), "has 5 layers but the model has"),
    ("dynamic_cache", lambda arch: DynamicCache(), r"must be an LRNNCache .* got DynamicCache"),
    ("dict", lambda arch: {}, r"must be an LRNNCache .* got dict"),
]


@pytest.mark.parametrize("arch", ["hlru", "bdlru"])
@pytest.mark.parametrize("make_cache, message", [c[1:] for c in FOREIGN_CACHES], ids=[c[0] for c in FOREIGN_CACHES])
def test_generate_refuses_a_cache_of_another_model(arch, make_cache, message):
    model = tiny_model(arch)
    with pytest.raises(ValueError, match=message):
        model.generate(IDS, max_new_tokens=2, do_sample=False, **{CACHE_FIELD: make_cache(arch)})


@pytest.mark.parametrize("arch", ["hlru", "bdlru"])
@pytest.mark.parametrize("make_cache, message", [c[1:] for c in FOREIGN_CACHES[:5]], ids=[c[0] for c in FOREIGN_CACHES[:5]])
def test_forward_refuses_a_cache_of_another_model(arch, make_cache, message):
    with pytest.raises(ValueError, match=message):
        tiny_model(arch)(IDS[:, :1], cache=make_cache(arch))


BAD_GENERATE_INPUTS = [
    ("max_new_tokens_0", dict(input_ids=IDS, max_new_tokens=0), "max_new_tokens"),
    ("max_new_tokens_negative", dict(input_ids=IDS, max_new_tokens=-3), "max_new_tokens"),
    ("prompt_id_outside_vocab", dict(input_ids=IDS + VOCAB, max_new_tokens=2),
     r"input_ids must be token ids in \[0, vocab_size=37\)"),
    ("prompt_id_negative", dict(input_ids=-IDS, max_new_tokens=2), r"input_ids must be token ids"),
    ("inputs_embeds_wrong_width", dict(inputs_embeds=embeds(2, 5, 15), max_new_tokens=2),
     r"inputs_embeds must be .*hidden_size=16"),
    ("attention_mask_shorter_than_prompt",
     dict(input_ids=IDS, attention_mask=torch.tensor([[0, 1, 1, 1]] * 2), max_new_tokens=2),
     r"attention_mask must be \[batch, seq_len\] = \[2, 5\] like the prompt"),
    ("attention_mask_value_2", dict(input_ids=IDS, attention_mask=torch.full((2, 5), 2), max_new_tokens=2),
     "attention_mask must hold only 1"),
    ("prompt_1d", dict(input_ids=IDS[0], max_new_tokens=2), r"input_ids must be \[batch >= 1, seq_len >= 1\]"),
    ("prompt_empty", dict(input_ids=IDS[:, :0], max_new_tokens=2), r"input_ids must be .* got shape \[2, 0\]"),
    ("prompt_no_rows", dict(input_ids=IDS[:0], max_new_tokens=2), r"input_ids must be .* got shape \[0, 5\]"),
    ("max_new_tokens_str", dict(input_ids=IDS, max_new_tokens="3"), "max_new_tokens must be an int >= 0, got '3'"),
    ("max_new_tokens_negative", dict(input_ids=IDS, max_new_tokens=-1), "max_new_tokens must be an int >= 0"),
    ("inputs_embeds_2d", dict(inputs_embeds=torch.zeros(5, 16), max_new_tokens=2), "inputs_embeds must be"),
]


@pytest.mark.parametrize("prompt", [IDS.tolist(), IDS.numpy()], ids=["list", "numpy"])
def test_generate_refuses_a_prompt_that_is_not_a_tensor(prompt):
    with pytest.raises(TypeError, match="inputs must be a torch.Tensor"):
        tiny_model("hlru").generate(prompt, max_new_tokens=2)


@pytest.mark.parametrize("arch", ["hlru", "bdlru"])
@pytest.mark.parametrize("inputs, message", [c[1:] for c in BAD_GENERATE_INPUTS], ids=[c[0] for c in BAD_GENERATE_INPUTS])
def test_generate_bad_input_raises_naming_it(arch, inputs, message):
    model = tiny_model(arch)
    with pytest.raises(ValueError, match=message):
        model.generate(**inputs, do_sample=False)


@pytest.mark.parametrize("arch", ["hlru", "bdlru"])
def test_generate_from_inputs_embeds_equals_from_input_ids(arch):
    model = tiny_model(arch, m=3)
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    kw = dict(attention_mask=mask, max_new_tokens=4, do_sample=False)
    from_ids = model.generate(IDS, **kw)
    from_embeds = model.generate(inputs_embeds=model.get_input_embeddings()(IDS), **kw)
    assert torch.equal(from_embeds, from_ids[:, IDS.shape[1]:])


# ======================================================================================================= 5. the cache
def filled_cache(batch=2):
    cache = LRNNCache(num_layers=2)
    for layer in range(2):
        cache.set_state(layer, torch.randn(batch, 5, 2))
    return cache


BAD_CACHE_CALLS = [
    ("no_config_nor_num_layers", lambda: LRNNCache(), "LRNNCache needs a config .* or num_layers"),
    ("num_layers_0", lambda: LRNNCache(num_layers=0), "num_layers must be an integer >= 1, got 0"),
    ("num_layers_negative", lambda: LRNNCache(num_layers=-1), "num_layers must be an integer >= 1, got -1"),
    ("num_layers_float", lambda: LRNNCache(num_layers=2.5), "num_layers must be an integer >= 1, got 2.5"),
    ("num_layers_str", lambda: LRNNCache(num_layers="2"), "num_layers must be an integer >= 1, got '2'"),
    ("config_dict", lambda: LRNNCache({"num_hidden_layers": 2}), "config must be a model config .* got dict"),
    ("get_state_layer_out_of_range", lambda: filled_cache().get_state(2), r"layer_idx must be an integer in \[0, 2\), got 2"),
    ("get_state_layer_str", lambda: filled_cache().get_state("0"), r"layer_idx must be an integer in \[0, 2\), got '0'"),
    ("set_state_layer_out_of_range", lambda: filled_cache().set_state(5, torch.zeros(2, 5, 2)), "layer_idx must be"),
    ("set_state_list", lambda: filled_cache().set_state(0, [0.0]),
     r"state must be a floating tensor \[batch, N, m\], got list"),
    ("set_state_2d", lambda: filled_cache().set_state(0, torch.zeros(2, 5)), r"state must be .* shape \(2, 5\)"),
    ("set_state_int", lambda: filled_cache().set_state(0, torch.zeros(2, 5, 2, dtype=torch.long)), r"state must be .*int64"),
    ("advance_negative", lambda: filled_cache().advance(-1), "num_tokens must be an integer >= 0, got -1"),
    ("advance_float", lambda: filled_cache().advance(1.5), "num_tokens must be an integer >= 0, got 1.5"),
    ("reorder_cache_list", lambda: filled_cache().reorder_cache([1, 0]), "beam_idx must be an integer torch.Tensor .* list"),
    ("reorder_cache_float", lambda: filled_cache().reorder_cache(torch.tensor([1.0, 0.0])), "beam_idx must be .*float32"),
    ("reorder_cache_bool", lambda: filled_cache().reorder_cache(torch.tensor([True, False])), "beam_idx must be .*bool"),
    ("batch_repeat_interleave_0", lambda: filled_cache().batch_repeat_interleave(0), "repeats must be an integer >= 1, got 0"),
    ("batch_repeat_interleave_float", lambda: filled_cache().batch_repeat_interleave(2.0), "repeats must be .* got 2.0"),
    ("batch_select_indices_list", lambda: filled_cache().batch_select_indices([0]), "indices must be .* got list"),
    ("batch_select_indices_2d", lambda: filled_cache().batch_select_indices(torch.tensor([[0]])),
     r"indices must be .*\(1, 1\)"),
    ("crop", lambda: filled_cache().crop(1), "cannot be cropped"),
    ("check_model_other_state_shape", lambda: filled_cache().check_model(tiny_config("hlru", m=3)),
     r"layer 0 holds a state of shape \(2, 5, 2\), but this model's states are \[batch, N, m\] = \[batch, 5, 3\]"),
    ("check_model_other_batch", lambda: filled_cache(batch=3).check_model(tiny_config("hlru"), 2),
     "holds states for a batch of 3 sequences, but the input has 2 rows"),
]


@pytest.mark.parametrize("call, message", [c[1:] for c in BAD_CACHE_CALLS], ids=[c[0] for c in BAD_CACHE_CALLS])
def test_cache_bad_argument_raises_naming_it(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_cache_belongs_to_the_first_model_that_uses_it():
    cache = LRNNCache(num_layers=2)
    cache.check_model(tiny_config("hlru"), 2)
    cache.check_model(tiny_config("hlru"), 2)  # the same model again: fine
    with pytest.raises(ValueError, match="model_type 'hlru' vs 'bdlru'"):
        cache.check_model(tiny_config("bdlru"), 2)


# ===================================================================================================== 6. the scripts
def test_train_config_overrides_bad_keys_and_values():
    from hf_lrnn.training.models import build_config, parse_key_values

    cases = [("odrer=2", r"config_overrides: unknown field\(s\) \['odrer'\] for model_type='hlru'"),
             ("block_size=4", r"unknown field\(s\) \['block_size'\]"),
             ("order=0", "order must be an integer >= 1, got 0"),
             ("hidden_size=abc", "hidden_size must be an integer >= 1, got 'abc'"),
             ("gate_activation=gelu", "gate_activation must be one of .*'gelu'"),
             ("selective=maybe", "selective must be True or False, got 'maybe'"),
             ("norm_eps=-1", r"norm_eps must be a finite number > 0, got -1"),
             ("vocab_size=3", "config_overrides: vocab_size=3 is smaller than the task's 20")]
    for text, message in cases:
        with pytest.raises(ValueError, match=message):
            build_config("hlru", 20, text)
    with pytest.raises(ValueError, match="config_overrides: expected comma-separated key=value pairs, got 'order'"):
        parse_key_values("order", "config_overrides")
    with pytest.raises(ValueError, match="model_type must be one of"):
        build_config("lstm", 20, "")


def test_train_task_options_bad_keys_and_values():
    from hf_lrnn.training.tasks import parse_task_options

    cases = [("parity", "seq_len=16", "unknown option 'seq_len' for task 'parity'; valid options: train_length"),
             ("parity", "train_length", "task option 'train_length' of task 'parity' is not of the form key=value"),
             ("in_context_recall", "seq_len=abc", "seq_len"),
             ("in_context_recall", "seq_len=16,seq_len=32", "option 'seq_len' of task 'in_context_recall' is given twice"),
             ("no_such_task", "", "no_such_task")]
    for task, text, message in cases:
        with pytest.raises(ValueError, match=message):
            parse_task_options(task, text)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Folders that are not a usable checkpoint, and one that is (model + tokenizer)."""
    root = tmp_path_factory.mktemp("folders")
    (root / "empty").mkdir()
    (root / "a_file").write_text("not a folder")
    for name, text in (("llama", '{"model_type": "llama"}'), ("bad_json", "{bad"), ("json_list", "[1]"),
                       ("no_weights", '{"model_type": "hlru"}')):
        (root / name).mkdir()
        (root / name / "config.json").write_text(text)
    tiny_model("hlru").save_pretrained(root / "no_tokenizer")
    tiny_model("hlru").save_pretrained(root / "corrupt_weights")
    tiny_tokenizer().save_pretrained(root / "corrupt_weights")
    (root / "corrupt_weights" / "model.safetensors").write_bytes(b"not safetensors")
    return root


FOLDER_PROBLEMS = [
    ("missing", "missing is not a folder"),
    ("a_file", "a_file is not a folder"),
    ("empty", "has no config.json"),
    ("llama", "model_type='llama'; expected one of"),
    ("bad_json", "is not a JSON config"),
    ("json_list", "is not a JSON config"),
    ("no_weights", "has a config.json but no weights"),
]


@pytest.mark.parametrize("folder, message", FOLDER_PROBLEMS + [("no_tokenizer", "has no tokenizer"),
                                                              ("corrupt_weights", "could not be loaded: SafetensorError")],
                         ids=[p[0] for p in FOLDER_PROBLEMS] + ["no_tokenizer", "corrupt_weights"])
def test_evaluate_script_refuses_a_folder_that_is_not_a_checkpoint(folders, folder, message, capsys):
    evaluate = load_script("evaluate")
    with pytest.raises(SystemExit) as exited:
        evaluate.main([str(folders / folder)])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "checkpoint=" in err and message in err and "Traceback" not in err, err


@pytest.mark.parametrize("folder, message", FOLDER_PROBLEMS, ids=[p[0] for p in FOLDER_PROBLEMS])
def test_push_to_hub_script_refuses_a_folder_that_is_not_a_checkpoint(folders, folder, message, capsys):
    push_to_hub = load_script("push_to_hub")
    assert push_to_hub.main([str(folders / folder), "org/name"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err


@pytest.mark.parametrize("script, args", [("evaluate.py", ["--window", "8"]), ("push_to_hub.py", ["org/name"])])
def test_scripts_exit_non_zero_with_one_message_and_no_traceback(folders, script, args):
    done = subprocess.run([sys.executable, os.path.join(SCRIPTS, script), str(folders / "no_weights"), *args],
                          capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": ROOT, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 2
    assert "has a config.json but no weights" in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]


# ===================================================================================== 7. the training checkpoints
class FakeAccelerator:
    is_main_process = True

    def wait_for_everyone(self):
        pass

    def save_state(self, path):
        with open(os.path.join(path, "model.safetensors"), "w") as f:
            f.write("weights")


def test_training_checkpoint_bad_arguments(tmp_path):
    from hf_lrnn.training.checkpoints import latest_checkpoint, load_checkpoint, save_checkpoint

    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ValueError, match="checkpoints_dir=.*a_file' is a file"):
        save_checkpoint(FakeAccelerator(), str(tmp_path / "a_file"), 1, {})
    with pytest.raises(ValueError, match="checkpoints_dir=.*a_file' is a file"):
        latest_checkpoint(str(tmp_path / "a_file"))
    with pytest.raises(ValueError, match="step must be an integer >= 0, got -1"):
        save_checkpoint(FakeAccelerator(), str(tmp_path / "ckpts"), -1, {})
    with pytest.raises(ValueError, match="keep_last must be an integer >= 0"):
        save_checkpoint(FakeAccelerator(), str(tmp_path / "ckpts"), 1, {}, keep_last=-2)
    with pytest.raises(ValueError, match="resume_from_checkpoint=.* is not a complete checkpoint"):
        load_checkpoint(FakeAccelerator(), str(tmp_path))
    assert latest_checkpoint(str(tmp_path / "missing")) is None
    path = save_checkpoint(FakeAccelerator(), str(tmp_path / "ckpts"), 3, {"step": 3})
    assert latest_checkpoint(str(tmp_path / "ckpts")) == path and path.endswith("step_3")


def test_models_load_their_own_checkpoint_after_these_checks(tmp_path):
    """The checks do not get in the way of a normal save / load / generate round trip (Auto classes, remote code)."""
    model = tiny_model("bdlru")
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, trust_remote_code=True).eval()
    kw = dict(max_new_tokens=3, do_sample=False)
    assert torch.equal(loaded.generate(IDS, **kw), model.generate(IDS, **kw))
