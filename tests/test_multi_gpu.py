"""Several GPUs: the scans launch on the GPU that holds their tensors, and a model split over two GPUs with
`device_map` computes what it computes on one (forward, backward, generate). The GPU tests need 2 CUDA devices and
are skipped otherwise; the device-map plan itself is checked on CPU.

The whole GPU suite also runs on a second GPU with HF_LRNN_TEST_CUDA_DEVICE=cuda:1 (tests/helpers.py: GPU)."""

import os

import pytest
import torch
from transformers import AutoModelForCausalLM

from hf_lrnn.ops import bdlru_scan, hlru_scan
from helpers import tiny_model

two_gpus = pytest.mark.skipif(
    torch.cuda.device_count() < 2 or os.environ.get("TRITON_INTERPRET") == "1", reason="needs 2 CUDA GPUs")


def run_scan(blocked, inputs, cu_seqlens=None):
    """Outputs and gradients of one scan (forward with the final state, backward through everything)."""
    gates, values, initial_state = (x.detach().requires_grad_() for x in inputs)
    scan = bdlru_scan if blocked else hlru_scan
    states, final = scan(gates, values, initial_state, output_final_state=True, backend="triton",
                         cu_seqlens=cu_seqlens)
    (states.float().square().sum() + final.square().sum()).backward()
    return [states, final, gates.grad, values.grad, initial_state.grad]


@two_gpus
@pytest.mark.parametrize("blocked,m", [(False, 1), (False, 2), (False, 4), (True, 2), (True, 4)])
@pytest.mark.parametrize("varlen", [False, True])
def test_scan_on_the_second_gpu_equals_the_first(blocked, m, varlen):
    torch.cuda.set_device(0)
    torch.manual_seed(0)
    B, T, N = (1, 700, 24) if varlen else (2, 700, 24)
    gates = torch.randn((B, T, N, m, m + 1) if blocked else (B, T, N, m + 1)).to(torch.bfloat16)
    values = torch.randn((B, T, N, m) if blocked else (B, T, N)).to(torch.bfloat16)
    cu_seqlens = torch.tensor([0, 100, 450, 700], dtype=torch.int32) if varlen else None
    initial_state = torch.randn(3 if varlen else B, N, m)
    on = {d: run_scan(blocked, [x.to(f"cuda:{d}") for x in (gates, values, initial_state)],
                      None if cu_seqlens is None else cu_seqlens.to(f"cuda:{d}")) for d in (0, 1)}
    assert torch.cuda.current_device() == 0  # the scan on cuda:1 did not change the current device
    for first, second in zip(on[0], on[1]):
        assert second.device == torch.device("cuda", 1)
        assert torch.equal(first.cpu(), second.cpu())  # the same kernels on the same kind of GPU: bit for bit


@two_gpus
@pytest.mark.parametrize("order", [(1, 0), (0, 1)])
def test_captured_decode_steps_on_either_gpu(order):
    """generate() captures its decode step on the GPU of the model (not the current one), in either order within one
    process: torch.cuda.graph's default capture stream lives on the device of the first capture."""
    torch.cuda.set_device(0)
    for index in order:
        device = f"cuda:{index}"
        model = tiny_model("hlru", m=2, hidden_size=64, num_units=16, scan_backend="triton").to(device).eval()
        ids = torch.randint(3, 37, (3, 20), device=device)
        kw = dict(max_new_tokens=12, do_sample=False, pad_token_id=0)
        eager = model.generate(ids, decode_graph=False, **kw)
        assert torch.equal(model.generate(ids, **kw), eager), device
        assert [key for key in model._decode_graphs] == [(3, torch.device(device), False)]
        assert torch.cuda.current_device() == 0


def split_model(folder, device_map, **kwargs):
    model = AutoModelForCausalLM.from_pretrained(folder, device_map=device_map, **kwargs)
    return model.eval()


@pytest.fixture(params=["explicit", "auto"])
def split_and_whole(request, arch, tmp_path):
    """The same saved model on cuda:0 and split over cuda:0 and cuda:1."""
    model = tiny_model(arch, m=2, hidden_size=64, num_units=16, num_hidden_layers=6, scan_backend="triton")
    model.save_pretrained(tmp_path)
    whole = split_model(tmp_path, {"": 0})
    if request.param == "explicit":  # the tied LM head stays with the embeddings
        device_map = {"model.embeddings": 0, "lm_head": 0, "model.norm_f": 1,
                      **{f"model.layers.{i}": 0 if i < 3 else 1 for i in range(6)}}
        split = split_model(tmp_path, device_map)
    else:  # accelerate plans the split: cuda:0 may hold about half of the weights
        size = sum(p.numel() * p.element_size() for p in model.parameters())
        split = split_model(tmp_path, "auto", max_memory={0: size // 2, 1: 10 * size})
    assert set(split.hf_device_map.values()) == {0, 1}, split.hf_device_map
    return whole, split


@two_gpus
def test_model_split_over_two_gpus_equals_one_gpu(split_and_whole):
    whole, split = split_and_whole
    torch.manual_seed(0)
    ids = torch.randint(3, 37, (3, 90))
    mask = torch.ones_like(ids)
    mask[0, :7] = 0  # a left-padded row
    outputs = {}
    for name, model in (("whole", whole), ("split", split)):
        model.zero_grad(set_to_none=True)
        out = model(ids.to("cuda:0"), attention_mask=mask.to("cuda:0"), labels=ids.to("cuda:0"))
        out.loss.backward()
        generated = model.generate(ids[:, :40].to("cuda:0"), attention_mask=mask[:, :40].to("cuda:0"),
                                   max_new_tokens=25, do_sample=False)
        outputs[name] = (out.logits.float().cpu(), out.loss.item(), generated.cpu(),
                         {n: p.grad.cpu() for n, p in model.named_parameters()})
    (logits, loss, generated, grads), (logits_s, loss_s, generated_s, grads_s) = outputs["whole"], outputs["split"]
    torch.testing.assert_close(logits_s, logits, rtol=1e-5, atol=1e-5)
    assert abs(loss_s - loss) < 1e-5
    assert torch.equal(generated_s, generated)  # greedy: token for token
    assert grads_s.keys() == grads.keys()
    for name in grads:
        torch.testing.assert_close(grads_s[name], grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_auto_device_map_keeps_blocks_whole(arch):
    """The plan accelerate makes for 2 GPUs (computed on CPU: no GPU needed): blocks are never cut, the tied LM head
    shares the embeddings' device, and both GPUs get work."""
    from accelerate import infer_auto_device_map

    model = tiny_model(arch, m=2, hidden_size=64, num_units=16, num_hidden_layers=6)
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    device_map = infer_auto_device_map(model, max_memory={0: size // 2, 1: 10 * size},
                                       no_split_module_classes=model._no_split_modules)
    assert set(device_map.values()) == {0, 1}, device_map
    assert device_map["lm_head"] == device_map["model.embeddings"]  # tied: one copy of the weight
    blocks = {name for name, module in model.named_modules() if type(module).__name__ in model._no_split_modules}
    assert len(blocks) == 6
    for name in device_map:  # every entry is a whole block or a module outside the blocks
        assert not any(name.startswith(block + ".") for block in blocks), name
