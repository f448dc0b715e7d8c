"""Model-level behaviour: shapes, loss, padding, save/load, remote code, Auto classes, config validation."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
)

import hf_lrnn
from helpers import archs, tiny_config, tiny_model, tiny_tokenizer
from helpers import HIDE_HF_LRNN


def cache_of(output):
    return getattr(output, hf_lrnn.modeling_lrnn.CACHE_FIELD)


def test_output_shapes_and_loss(arch):
    model = tiny_model(arch, m=3)
    ids = torch.randint(3, 37, (2, 11))
    out = model(ids, labels=ids, output_hidden_states=True)
    assert out.logits.shape == (2, 11, 37)
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1
    assert isinstance(cache_of(out), hf_lrnn.LRNNCache) and cache_of(out).get_seq_length() == 11
    expected = F.cross_entropy(out.logits[:, :-1].reshape(-1, 37), ids[:, 1:].reshape(-1))
    torch.testing.assert_close(out.loss, expected)
    base = tiny_model(arch, head="model", m=3)
    assert base(ids).last_hidden_state.shape == (2, 11, 16)
    as_tuple = model(ids, return_dict=False, use_cache=False)
    torch.testing.assert_close(as_tuple[0], out.logits)


@pytest.mark.parametrize("m", [1, 2, 3])
def test_hlru_mixer_reads_out_the_window_of_previous_states(m):
    """docs/spec.md: H-LRU's output projection sees [s_t, s_{t-1}, ..., s_{t-m+1}] per channel (zeros before the
    start), checked in float64 against the direct loop of the reference tests."""
    from test_ops_reference import direct_hlru

    model = tiny_model("hlru", m=m).double()
    mixer = model.model.layers[0].mixer
    x = torch.randn(2, 6, 16, dtype=torch.float64)
    N = mixer.num_units
    with torch.no_grad():
        out = mixer(x)
        gates = mixer.coefficient_proj(x).view(2, 6, N, m + 1)
        states, _ = direct_hlru(gates, mixer.value_proj(x), None, mixer.gate_activation)  # [B, T, N]
        window = torch.zeros(2, 6, N, m, dtype=torch.float64)
        for t in range(6):
            for k in range(min(m, t + 1)):
                window[:, t, :, k] = states[:, t - k]
        expected = mixer.out_proj(window.reshape(2, 6, N * m))
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("m", [1, 2, 3, 4])
@pytest.mark.parametrize("T", [1, 2, 5])
def test_fresh_hlru_window_gradients(m, T):
    """The window's own backward: gradcheck in float64, and in bfloat16 what autograd gives for the same window built
    from differentiable ops (pad, stack), including sequences shorter than the window: bitwise where each gradient is
    a sum of at most two terms (m <= 2), else up to the order of the bfloat16 sums."""
    from hf_lrnn.modeling_lrnn import fresh_hlru_window

    states = torch.randn(2, T, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: fresh_hlru_window(s, m), (states,))
    states = torch.randn(2, T, 3, dtype=torch.bfloat16, requires_grad=True)
    grad = torch.randn(2, T, 3, m, dtype=torch.bfloat16)
    earlier = F.pad(states, (0, 0, m - 1, 0))
    expected = torch.stack([earlier[:, m - 1 - k : m - 1 - k + T] for k in range(m)], dim=-1)
    (expected_grad,) = torch.autograd.grad(expected, states, grad)
    window = fresh_hlru_window(states, m)
    (window_grad,) = torch.autograd.grad(window, states, grad)
    assert torch.equal(window, expected)
    if m <= 2:
        assert torch.equal(window_grad, expected_grad)
    torch.testing.assert_close(window_grad, expected_grad, rtol=2e-2, atol=2e-2)


def test_autocast_output_projection_takes_the_readout_in_low_precision(arch):
    """Under autocast the residual stream is float32 but the output projection runs in bfloat16: the read-out goes in
    as the scan wrote it (bfloat16), not through a float32 copy that autocast would only cast back."""
    model = tiny_model(arch, m=2)
    seen = []
    model.model.layers[0].mixer.out_proj.register_forward_pre_hook(lambda module, args: seen.append(args[0].dtype))
    ids = torch.randint(3, 37, (2, 7))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(ids, use_cache=False).logits
    assert seen == [torch.bfloat16]
    torch.testing.assert_close(logits.float(), model(ids, use_cache=False).logits, rtol=0.05, atol=0.05)


def test_autocast_casts_each_norm_output_once(arch, monkeypatch):
    """Under autocast both projections after a norm read one tensor in autocast's dtype (autocast alone would cast the
    float32 norm output once per projection): the same logits bitwise, gradients up to bfloat16 sums."""
    model = tiny_model(arch, m=2).train()
    layer = model.model.layers[0]
    seen = {}
    for name, module in (("value", layer.mixer.value_proj), ("coefficients", layer.mixer.coefficient_proj),
                         ("gate", layer.mlp.gate_proj), ("up", layer.mlp.up_proj)):
        module.register_forward_pre_hook(lambda module, args, name=name: seen.__setitem__(name, args[0]))
    ids = torch.randint(3, 37, (2, 7))

    def logits_and_grads():
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(ids, use_cache=False).logits
        logits.float().square().mean().backward()
        return logits, [p.grad.clone() for p in model.parameters()]

    logits, grads = logits_and_grads()
    assert seen["value"] is seen["coefficients"] and seen["value"].dtype == torch.bfloat16
    assert seen["gate"] is seen["up"] and seen["gate"].dtype == torch.bfloat16
    monkeypatch.setattr(hf_lrnn.modeling_lrnn, "_in_autocast_dtype", lambda normed: normed)  # autocast's own casts
    expected_logits, expected_grads = logits_and_grads()
    assert seen["value"].dtype == torch.float32  # each projection casts it again
    assert torch.equal(logits, expected_logits)
    for grad, expected in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected, rtol=2e-2, atol=1e-3)


def test_logits_to_keep_and_inputs_embeds(arch):
    model = tiny_model(arch)
    ids = torch.randint(3, 37, (2, 8))
    full = model(ids).logits
    torch.testing.assert_close(model(ids, logits_to_keep=1).logits, full[:, -1:])
    embeds = model.get_input_embeddings()(ids)
    torch.testing.assert_close(model(inputs_embeds=embeds).logits, full)
    with pytest.raises(ValueError, match="exactly one"):
        model(ids, inputs_embeds=embeds)


def test_init_follows_spec(arch):
    model = tiny_model(arch, m=2, hidden_size=64, initializer_range=0.02)
    mixer = model.model.layers[0].mixer
    assert torch.count_nonzero(mixer.coefficient_proj.bias) == 0  # every gate starts at 1/(m+1)
    weights = torch.cat([p.flatten() for n, p in model.named_parameters() if n.endswith("proj.weight")])
    assert abs(weights.std().item() - 0.02) < 0.002
    non_selective = tiny_model(arch, m=2, selective=False).model.layers[0].mixer
    assert not hasattr(non_selective, "coefficient_proj")
    logits = non_selective.gate_logits
    assert logits.shape == ((5, 2, 3) if arch == "bdlru" else (5, 3))
    assert logits.min() >= 0 and logits.max() < 1 and logits.std() > 0.1


@pytest.mark.parametrize("m", [1, 2, 3])
@pytest.mark.parametrize("selective", [True, False])
def test_left_padding_gives_unpadded_outputs(arch, m, selective):
    model = tiny_model(arch, m=m, selective=selective)
    row = torch.randint(3, 37, (1, 7))
    other = torch.randint(3, 37, (1, 10))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), row], dim=1)
    batch = torch.cat([padded, other])
    mask = torch.ones_like(batch)
    mask[0, :3] = 0
    out = model(batch, attention_mask=mask)
    alone = model(row)
    torch.testing.assert_close(out.logits[0, 3:], alone.logits[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.logits[1], model(other).logits[0], rtol=1e-5, atol=1e-5)
    for layer in range(model.config.num_hidden_layers):  # the cached state ignores the padding too
        torch.testing.assert_close(cache_of(out).get_state(layer)[0], cache_of(alone).get_state(layer)[0])


@pytest.mark.parametrize("m", [1, 3])
def test_padded_continuation_of_a_cached_state_skips_padding(arch, m):
    """Padding after a non-zero state (and in the middle) must leave the state unchanged."""
    model = tiny_model(arch, m=m)
    prefix = torch.randint(3, 37, (1, 5))
    rest = torch.randint(3, 37, (1, 4))
    cache = cache_of(model(prefix))
    padded_rest = torch.cat([torch.zeros(1, 2, dtype=torch.long), rest[:, :2], torch.zeros(1, 1, dtype=torch.long),
                             rest[:, 2:]], dim=1)
    mask = torch.tensor([[1] * 5 + [0, 0, 1, 1, 0, 1, 1]])
    out = model(padded_rest, attention_mask=mask, cache=cache)
    want = model(torch.cat([prefix, rest], 1)).logits[0, 5:]
    torch.testing.assert_close(out.logits[0, [2, 3, 5, 6]], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("use_reentrant", [None, True, False])
def test_gradient_checkpointing_gives_same_gradients(arch, use_reentrant):
    """Reentrant checkpointing passes gradients only through positional tensors: the blocks take the previous block's
    deferred MLP output positionally (LRNNBlock.forward's residual_delta), or the earlier blocks would get none."""
    ids = torch.randint(3, 37, (2, 9))
    grads = []
    for checkpointing in (False, True):
        model = tiny_model(arch, m=2).train()
        if checkpointing:  # renamed activation_checkpointing_enable in transformers 5.2x; both must work
            renamed = hasattr(model, "activation_checkpointing_enable")
            enable = model.activation_checkpointing_enable if renamed else model.gradient_checkpointing_enable
            keyword = "activation_checkpointing_kwargs" if renamed else "gradient_checkpointing_kwargs"
            enable(**({} if use_reentrant is None else {keyword: {"use_reentrant": use_reentrant}}))
            assert all(layer.gradient_checkpointing for layer in model.model.layers)
        loss = model(ids, labels=ids).loss
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 0
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-5, atol=1e-6)


def test_training_mode_has_no_cache_by_default(arch):
    model = tiny_model(arch).train()
    assert cache_of(model(torch.randint(3, 37, (1, 4)))) is None


def test_sequence_classification_pools_last_real_token(arch):
    model = tiny_model(arch, head="classification", num_labels=3)
    ids = torch.randint(3, 37, (2, 6))
    mask = torch.ones_like(ids)
    ids[1, :2] = 0
    mask[1, :2] = 0
    out = model(ids, attention_mask=mask, labels=torch.tensor([0, 2]))
    assert out.logits.shape == (2, 3)
    alone = model(ids[1:, 2:]).logits
    torch.testing.assert_close(out.logits[1:], alone, rtol=1e-5, atol=1e-5)
    assert torch.isfinite(out.loss)
    right_padded = torch.cat([ids[1:, 2:], torch.zeros(1, 2, dtype=torch.long)], 1)
    torch.testing.assert_close(model(right_padded).logits, alone, rtol=1e-5, atol=1e-5)  # pad_token_id rule


@pytest.mark.parametrize("tie", [True, False])
def test_save_load_round_trip(arch, tie, tmp_path):
    model = tiny_model(arch, m=3, tie_word_embeddings=tie)
    assert (model.lm_head.weight is model.model.embeddings.weight) == tie
    ids = torch.randint(3, 37, (2, 7))
    model.save_pretrained(tmp_path)
    files = set(os.listdir(tmp_path))
    assert {"config.json", "model.safetensors", "configuration_lrnn.py", f"modeling_{arch}.py", "modeling_lrnn.py",
            "ops.py", "scan_torch.py", "scan_triton.py", "cache_lrnn.py", "lm_loss.py"} <= files
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert set(auto_map) == {"AutoConfig", "AutoModel", "AutoModelForCausalLM", "AutoModelForSequenceClassification"}
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model)
    assert (loaded.lm_head.weight is loaded.model.embeddings.weight) == tie
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)


def test_every_auto_class(arch, tmp_path):
    config_class, _, _, model_class, lm_class, cls_class = archs()[arch]
    config = tiny_config(arch)
    assert type(AutoConfig.for_model(config_class.model_type, vocab_size=10, hidden_size=8)) is config_class
    assert type(AutoModel.from_config(config)) is model_class
    assert type(AutoModelForCausalLM.from_config(config)) is lm_class
    assert type(AutoModelForSequenceClassification.from_config(config)) is cls_class
    lm = tiny_model(arch)
    lm.save_pretrained(tmp_path)
    assert type(AutoConfig.from_pretrained(tmp_path)) is config_class
    base = AutoModel.from_pretrained(tmp_path)
    assert type(base) is model_class
    torch.testing.assert_close(base.embeddings.weight, lm.model.embeddings.weight)
    assert type(AutoModelForSequenceClassification.from_pretrained(tmp_path, num_labels=4)) is cls_class


REMOTE_SCRIPT = HIDE_HF_LRNN + textwrap.dedent(
    """
    import sys
    import torch
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification
    folder, ids_file, logits_file = sys.argv[1:4]
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    ids = torch.load(ids_file)
    torch.testing.assert_close(model(ids).logits, torch.load(logits_file), rtol=0, atol=0)
    greedy = model.generate(ids, max_new_tokens=4, do_sample=False)
    assert greedy.shape == (ids.shape[0], ids.shape[1] + 4)
    base = AutoModel.from_pretrained(folder, trust_remote_code=True)
    classifier = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True, num_labels=2)
    from transformers import pipeline
    generator = pipeline("text-generation", model=folder, trust_remote_code=True, device="cpu")
    text = generator("w3 w4 w5", max_new_tokens=3, do_sample=False)[0]["generated_text"]
    assert text.startswith("w3 w4 w5") and text.count("w") == 6, text
    print("REMOTE_OK", type(model).__name__, type(base).__name__, type(classifier).__name__)
    """
)


def test_remote_code_loads_without_the_package(arch, tmp_path):
    model = tiny_model(arch, m=2)
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)  # for the text-generation pipeline
    ids = torch.randint(3, 37, (2, 6))
    torch.save(ids, tmp_path / "ids.pt")
    torch.save(model(ids).logits.detach(), tmp_path / "logits.pt")
    script = tmp_path / "remote.py"
    script.write_text(REMOTE_SCRIPT)
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1", PYTHONPATH="")
    result = subprocess.run(
        [sys.executable, str(script), str(folder), str(tmp_path / "ids.pt"), str(tmp_path / "logits.pt")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    prefix = "HLRU" if arch == "hlru" else "BDLRU"
    assert f"REMOTE_OK {prefix}ForCausalLM {prefix}Model {prefix}ForSequenceClassification" in result.stdout


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(hidden_size=0), "hidden_size"),
        (dict(vocab_size=-3), "vocab_size"),
        (dict(num_hidden_layers=1.5), "num_hidden_layers"),
        (dict(gate_activation="gelu"), "gate_activation"),
        (dict(norm_type="batchnorm"), "norm_type"),
        (dict(norm_eps=0), "norm_eps"),
        (dict(intermediate_size=0), "intermediate_size"),
        (dict(selective="yes"), "selective"),
        (dict(scan_backend="cuda"), "scan_backend"),
        (dict(pad_token_id=999), "pad_token_id"),
        (dict(eos_token_id=[2, 500]), "eos_token_id"),
        (dict(initializer_range=-1.0), "initializer_range"),
    ],
)
def test_bad_config_values_raise(arch, overrides, field):
    with pytest.raises(ValueError, match=field):
        tiny_config(arch, **overrides)


@pytest.mark.parametrize("arch_name, bad", [("hlru", dict(order=0)), ("hlru", dict(num_channels=-1)),
                                            ("bdlru", dict(block_size=0)), ("bdlru", dict(num_blocks=0))])
def test_bad_mixer_sizes_raise(arch_name, bad):
    config_class = archs()[arch_name][0]
    field = next(iter(bad))
    with pytest.raises(ValueError, match=f"{field} must be an integer >= 1"):
        config_class(hidden_size=16, **bad)


def test_config_defaults_follow_the_paper():
    config = hf_lrnn.HLRUConfig(hidden_size=128, order=4)
    assert config.num_channels == 32 and config.state_size == 128
    assert config.intermediate_size == 352  # int(2*128*4/3)=341 -> next multiple of 16
    assert config.gate_activation == "softmax" and config.selective and config.norm_type == "layernorm"
    reloaded = hf_lrnn.HLRUConfig.from_dict(config.to_dict())
    assert reloaded.order == 4 and reloaded.num_channels == 32


def test_rmsnorm_option(arch):
    model = tiny_model(arch, norm_type="rmsnorm")
    assert isinstance(model.model.norm_f, hf_lrnn.modeling_lrnn.RMSNorm)
    assert torch.isfinite(model(torch.randint(3, 37, (1, 5))).logits).all()
