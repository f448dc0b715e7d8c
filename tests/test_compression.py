"""The MAD compression auto-encoder head (LRNNForCompression) and hf_lrnn.AutoModelForCompression."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from transformers.modeling_outputs import MaskedLMOutput

import hf_lrnn
from helpers import tiny_config
from helpers import HIDE_HF_LRNN

COMPRESSION = {"hlru": hf_lrnn.HLRUForCompression, "bdlru": hf_lrnn.BDLRUForCompression}


def tiny_compressor(arch, seed=0, **overrides):
    torch.manual_seed(seed)
    return COMPRESSION[arch](tiny_config(arch, **overrides)).eval()


def decode_from(model, pooled, T):
    """The decoder written out from a pooled vector [B, d]: what the head must compute from it alone."""
    d = pooled.shape[-1]
    positions = torch.arange(T)
    half = d // 2
    frequencies = torch.exp(torch.arange(half) * -(torch.log(torch.tensor(10000.0)) / (half - 1)))
    angles = positions[:, None] * frequencies[None]
    encoding = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)  # [T, d] (d even)
    x = pooled[:, None, :] + encoding  # [B, T, d]
    decoder = model.decoder
    x = F.gelu(decoder.fc_in(decoder.norm_in(x)))
    x = F.gelu(decoder.fc_out(decoder.norm_mid(x)))
    return model.unembed(model.unembed_norm(x))


def test_shapes_and_loss(arch):
    model = tiny_compressor(arch, m=3)
    ids = torch.randint(0, 37, (2, 9))
    labels = ids.clone()
    labels[0, :2] = -100
    out = model(ids, labels=labels, output_hidden_states=True)
    assert isinstance(out, MaskedLMOutput)
    assert out.logits.shape == (2, 9, 37)
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1
    expected = F.cross_entropy(out.logits.reshape(-1, 37), labels.reshape(-1), ignore_index=-100)  # aligned
    torch.testing.assert_close(out.loss, expected)
    as_tuple = model(ids, labels=labels, return_dict=False)
    torch.testing.assert_close(as_tuple[0], out.loss)
    torch.testing.assert_close(as_tuple[1], out.logits)
    embeds = model.get_input_embeddings()(ids)
    torch.testing.assert_close(model(inputs_embeds=embeds).logits, out.logits)
    assert model(torch.randint(0, 37, (1, 40))).logits.shape == (1, 40, 37)  # positions for any length


def test_all_ignored_labels_give_zero_loss_and_finite_grads(arch):
    model = tiny_compressor(arch).train()
    ids = torch.randint(0, 37, (2, 6))
    loss = model(ids, labels=torch.full_like(ids, -100)).loss
    assert loss.item() == 0.0
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_output_is_decoded_from_the_last_token_state_only(arch):
    model = tiny_compressor(arch)
    ids = torch.randint(3, 37, (2, 7))
    out = model(ids)
    pooled = model.model(ids, use_cache=False).last_hidden_state[:, -1]  # [B, d]
    torch.testing.assert_close(out.logits, decode_from(model, pooled, 7), rtol=1e-5, atol=1e-5)
    changed = ids.clone()
    changed[:, -1] = (changed[:, -1] - 3 + 1) % 34 + 3  # another token at the last position
    differs = (model(changed).logits - out.logits).abs().amax(-1)  # [B, T]
    assert (differs > 1e-6).all()  # every output position moved
    across = (out.logits[:, 1:] - out.logits[:, :-1]).abs().amax(-1)  # the decoder knows the position
    assert (across > 1e-4).all()


def test_padding_pools_the_last_real_token(arch):
    model = tiny_compressor(arch, m=2)
    row = torch.randint(3, 37, (1, 6))
    other = torch.randint(3, 37, (1, 9))
    alone = model(row).logits[0]  # [6, vocab]
    left = torch.cat([torch.zeros(1, 3, dtype=torch.long), row], 1)
    right = torch.cat([row, torch.zeros(1, 3, dtype=torch.long)], 1)
    for padded, real in ((left, slice(3, 9)), (right, slice(0, 6))):
        batch = torch.cat([padded, other])
        mask = torch.zeros_like(batch)
        mask[0, real] = 1
        mask[1] = 1
        out = model(batch, attention_mask=mask)
        torch.testing.assert_close(out.logits[0, real], alone, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out.logits[1], model(other).logits[0], rtol=1e-5, atol=1e-5)
    labels = torch.cat([torch.full((1, 3), -100), row], 1)  # the padded row's loss is the unpadded row's
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 6, dtype=torch.long)], 1)
    torch.testing.assert_close(model(left, attention_mask=mask, labels=labels).loss, model(row, labels=row).loss)


@pytest.mark.parametrize("tie", [True, False])
def test_save_and_auto_load(arch, tie, tmp_path):
    model = tiny_compressor(arch, m=2, tie_word_embeddings=tie)
    assert (model.unembed.weight is model.model.embeddings.weight) == tie
    model.save_pretrained(tmp_path)
    files = set(os.listdir(tmp_path))
    assert {"config.json", "model.safetensors", "configuration_lrnn.py", f"modeling_{arch}.py", "modeling_lrnn.py",
            "ops.py", "scan_torch.py", "scan_triton.py", "cache_lrnn.py"} <= files
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    prefix = "HLRU" if arch == "hlru" else "BDLRU"
    assert auto_map["AutoModelForCompression"] == f"modeling_{arch}.{prefix}ForCompression"
    assert {"AutoConfig", "AutoModel", "AutoModelForCausalLM", "AutoModelForSequenceClassification"} <= set(auto_map)
    ids = torch.randint(0, 37, (2, 7))
    want = model(ids).logits
    loaded = hf_lrnn.AutoModelForCompression.from_pretrained(tmp_path).eval()
    assert type(loaded) is COMPRESSION[arch]
    assert (loaded.unembed.weight is loaded.model.embeddings.weight) == tie
    torch.testing.assert_close(loaded(ids).logits, want, rtol=0, atol=0)
    # with hf_lrnn imported, transformers prefers the registered (installed) class even with trust_remote_code;
    # the folder's own code is exercised without the package in test_remote_code_loads_without_the_package
    trusted = hf_lrnn.AutoModelForCompression.from_pretrained(tmp_path, trust_remote_code=True).eval()
    torch.testing.assert_close(trusted(ids).logits, want, rtol=0, atol=0)


def test_auto_class_from_config_and_from_a_causal_lm_folder(arch, tmp_path):
    config = tiny_config(arch)
    assert type(hf_lrnn.AutoModelForCompression.from_config(config)) is COMPRESSION[arch]
    torch.manual_seed(0)
    lm = (hf_lrnn.HLRUForCausalLM if arch == "hlru" else hf_lrnn.BDLRUForCausalLM)(config)
    lm.save_pretrained(tmp_path)
    compressor = hf_lrnn.AutoModelForCompression.from_pretrained(tmp_path)  # backbone from the LM, new decoder
    assert type(compressor) is COMPRESSION[arch]
    torch.testing.assert_close(compressor.model.layers[0].mixer.value_proj.weight,
                               lm.model.layers[0].mixer.value_proj.weight)


REMOTE_SCRIPT = HIDE_HF_LRNN + textwrap.dedent(
    """
    import sys
    import json, os
    from collections import OrderedDict
    import torch
    from transformers.dynamic_module_utils import get_class_from_dynamic_module
    from transformers.models.auto.auto_factory import _BaseAutoModelClass, _LazyAutoMapping
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    class AutoModelForCompression(_BaseAutoModelClass):  # the copy of hf_lrnn.AutoModelForCompression
        _model_mapping = _LazyAutoMapping(CONFIG_MAPPING_NAMES, OrderedDict())

    for folder in sys.argv[1:]:
        ids = torch.load(os.path.join(folder, "ids.pt"))
        want = torch.load(os.path.join(folder, "logits.pt"))
        model = AutoModelForCompression.from_pretrained(folder, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        torch.testing.assert_close(model(ids).logits, want, rtol=0, atol=0)
        reference = json.load(open(os.path.join(folder, "config.json")))["auto_map"]["AutoModelForCompression"]
        model_class = get_class_from_dynamic_module(reference, folder)
        torch.testing.assert_close(model_class.from_pretrained(folder).eval()(ids).logits, want, rtol=0, atol=0)
        print("REMOTE_OK", type(model).__name__, model_class.__name__)
    """
)


def test_remote_code_loads_without_the_package(tmp_path):
    folders = []
    for arch in COMPRESSION:  # both architectures in one subprocess (start-up dominates)
        model = tiny_compressor(arch, m=2)
        folder = tmp_path / arch
        model.save_pretrained(folder)
        ids = torch.randint(0, 37, (2, 6))
        torch.save(ids, folder / "ids.pt")
        torch.save(model(ids).logits.detach(), folder / "logits.pt")
        folders.append(str(folder))
    script = tmp_path / "remote.py"
    script.write_text(REMOTE_SCRIPT)
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1", PYTHONPATH="")
    result = subprocess.run([sys.executable, str(script), *folders], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "REMOTE_OK HLRUForCompression HLRUForCompression" in result.stdout
    assert "REMOTE_OK BDLRUForCompression BDLRUForCompression" in result.stdout


def test_a_short_training_run_learns_to_compress(arch):
    torch.manual_seed(0)
    config = tiny_config(arch, m=2, vocab_size=8, hidden_size=32, intermediate_size=64, num_units=16,
                         pad_token_id=None, bos_token_id=None, eos_token_id=None)
    model = COMPRESSION[arch](config).train()
    ids = torch.randint(0, 8, (16, 8))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        loss = model(ids, labels=ids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 1.9  # about ln 8 = 2.08 at the start
    assert losses[-1] < 0.3 * losses[0], losses[::10]  # about 0.1-0.3 after 60 steps
