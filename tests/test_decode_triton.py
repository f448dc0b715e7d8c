"""decode_triton: a decode step's (add +) norm + projections in one kernel (norm_project) and its output projections
over all SMs (project_rows), against float64 formulas (interpreter on CPU, or the GPU), against the unfused Triton path
in the models, and where they must not run."""

import os

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM

import hf_lrnn
from hf_lrnn import decode_triton, modeling_lrnn
from hf_lrnn.modeling_lrnn import RMSNorm

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.skipif(DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1",
                                reason="needs CUDA or TRITON_INTERPRET=1")


def _norm_formula(total, weight, bias, eps, is_rms):
    total = total.double()
    if is_rms:
        centered = total
    else:
        centered = total - total.mean(-1, keepdim=True)
    out = centered / torch.sqrt((centered * centered).mean(-1, keepdim=True) + eps) * weight.double()
    return out + bias.double() if bias is not None else out


def _modules(K, N_A, N_B, is_rms, bias_b, dtype, generator):
    norm = RMSNorm(K) if is_rms else nn.LayerNorm(K)
    proj_a = nn.Linear(K, N_A, bias=False)
    proj_b = nn.Linear(K, N_B, bias=bias_b) if N_B else None
    for module in (norm, proj_a, proj_b):
        if module is None:
            continue
        for parameter in module.parameters():
            parameter.data = torch.randn(parameter.shape, generator=generator, dtype=torch.float64) * 0.5 + (
                1.0 if parameter is getattr(norm, "weight", None) else 0.0)
    return [m.to(DEVICE, dtype) if m is not None else None for m in (norm, proj_a, proj_b)]


@pytest.mark.parametrize("is_rms", [False, True])
@pytest.mark.parametrize("with_delta", [False, True])
@pytest.mark.parametrize("mode", ["two", "swiglu", "one"])
@pytest.mark.parametrize("rows", [1, 3])
@pytest.mark.parametrize("max_chunk_k", [64, None])
def test_norm_project_matches_float64_formula(is_rms, with_delta, mode, rows, max_chunk_k, monkeypatch):
    """K = 200 (not a power of two; one row in one step, or with MAX_CHUNK_K = 64 in four; three rows in 128-wide
    steps), output features not multiples
    of BLOCK_N; float64 in and out: the kernel's float64 accumulation against the formula, to float32 statistics'
    precision."""
    if max_chunk_k is not None:
        monkeypatch.setattr(decode_triton, "MAX_CHUNK_K", max_chunk_k)
    generator = torch.Generator().manual_seed(rows * 8 + with_delta * 2 + is_rms)
    K, N_A = 200, 37
    N_B = {"two": 53, "swiglu": 37, "one": 0}[mode]
    norm, proj_a, proj_b = _modules(K, N_A, N_B, is_rms, bias_b=mode == "two", dtype=torch.float64,
                                    generator=generator)
    x = torch.randn(rows, 1, K, generator=generator, dtype=torch.float64).to(DEVICE) * 2
    delta = torch.randn(rows, 1, K, generator=generator, dtype=torch.float64).to(DEVICE) if with_delta else None
    with torch.no_grad():
        total, a, b = decode_triton.norm_project(x, delta, norm, is_rms, proj_a, proj_b, swiglu=mode == "swiglu")
        want_total = x + delta if with_delta else x
        normed = _norm_formula(want_total, norm.weight, getattr(norm, "bias", None), norm.eps, is_rms)
        want_a = normed @ proj_a.weight.double().T
        want_b = None
        if mode == "swiglu":
            want_a = torch.nn.functional.silu(want_a) * (normed @ proj_b.weight.double().T)
        elif mode == "two":
            want_b = normed @ proj_b.weight.double().T + proj_b.bias.double()
    assert a.dtype == torch.float64 and a.shape == (rows, 1, N_A)
    # the statistics are float32 (as norm_triton's): ~1e-7 relative
    torch.testing.assert_close(total, want_total, rtol=0, atol=1e-6 if with_delta else 0)
    torch.testing.assert_close(a, want_a, rtol=1e-5, atol=1e-5)
    if want_b is None:
        assert b is None
    else:
        torch.testing.assert_close(b, want_b, rtol=1e-5, atol=1e-5)


def test_norm_project_bfloat16_matches_unfused_path():
    """bfloat16 weights and activations: against add_norm_triton + nn.Linear + silu_mul_triton (the unfused path),
    within bfloat16 rounding (the dot products sum in another order)."""
    generator = torch.Generator().manual_seed(1)
    K, N = 96, 80
    norm, gate_proj, up_proj = _modules(K, N, N, False, bias_b=False, dtype=torch.bfloat16, generator=generator)
    x, delta = (torch.randn(2, 1, K, generator=generator).to(DEVICE, torch.bfloat16) for _ in range(2))
    with torch.no_grad():
        total, activation, _ = decode_triton.norm_project(x, delta, norm, False, gate_proj, up_proj, swiglu=True)
        want_total, normed = modeling_lrnn.apply_add_norm(norm, x, delta, True, for_projections=True)
        want = modeling_lrnn.silu_mul_triton(gate_proj(normed), up_proj(normed))
    assert torch.equal(total, want_total)
    torch.testing.assert_close(activation.float(), want.float(), rtol=2e-2, atol=2e-2)


class _Adapter(nn.Linear):
    """Stands for a LoRA or quantised layer: an nn.Linear subclass that computes something else."""

    def forward(self, x):
        return super().forward(x) * 2


def test_can_fuse_only_where_it_computes_the_same():
    norm = nn.LayerNorm(16).to(DEVICE)
    proj_a, proj_b = nn.Linear(16, 8, bias=False).to(DEVICE), nn.Linear(16, 8).to(DEVICE)
    x = torch.randn(2, 1, 16, device=DEVICE)
    with torch.no_grad():
        assert decode_triton.can_fuse(x, None, norm, proj_a, proj_b, False)
        assert decode_triton.can_fuse(x, x.clone(), norm, proj_a, None, False)
        assert not decode_triton.can_fuse(torch.randn(2, 2, 16, device=DEVICE), None, norm, proj_a, proj_b, False)
        rows = decode_triton.MAX_ROWS + 1
        assert not decode_triton.can_fuse(torch.randn(rows, 1, 16, device=DEVICE), None, norm, proj_a, proj_b, False)
        assert not decode_triton.can_fuse(x.double(), None, norm, proj_a, proj_b, False)  # dtypes differ
        assert not decode_triton.can_fuse(x, x.half(), norm, proj_a, proj_b, False)
        assert not decode_triton.can_fuse(x, None, norm, nn.Linear(16, 8, bias=True).to(DEVICE), proj_b, False)
        adapter = _Adapter(16, 8, bias=False).to(DEVICE)
        assert not decode_triton.can_fuse(x, None, norm, adapter, proj_b, False)
        assert not decode_triton.can_fuse(x, None, norm, proj_a, adapter, False)
        assert not decode_triton.can_fuse(x, None, nn.LayerNorm(16, elementwise_affine=False), proj_a, proj_b, False)
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            assert not decode_triton.can_fuse(x, None, norm, proj_a, proj_b, False)
    assert not decode_triton.can_fuse(x, None, norm, proj_a, proj_b, False)  # autograd on


def test_norm_project_swiglu_needs_matching_features():
    norm = nn.LayerNorm(16).to(DEVICE)
    x = torch.randn(1, 1, 16, device=DEVICE)
    with torch.no_grad(), pytest.raises(ValueError, match="proj_a's 8 output features"):
        decode_triton.norm_project(x, None, norm, False, nn.Linear(16, 8, bias=False).to(DEVICE),
                                   nn.Linear(16, 4, bias=False).to(DEVICE), swiglu=True)


CONFIGS = {
    "hlru-2": lambda **k: hf_lrnn.HLRUConfig(order=2, **k),
    "hlru-1-nonselective": lambda **k: hf_lrnn.HLRUConfig(order=1, selective=False, **k),
    "bdlru-4-rms": lambda **k: hf_lrnn.BDLRUConfig(block_size=4, norm_type="rmsnorm", **k),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_decode_steps_with_the_fused_kernel_equal_the_unfused_path(name, monkeypatch):
    """float64 models on the Triton backend: three decode steps after a prefill, fused (2 norm_project and 2
    project_rows calls per layer per step) against the same model with both switched off, logits and states to 1e-5 (float32
    statistics) and greedy tokens equal."""
    config = CONFIGS[name](vocab_size=64, hidden_size=40, num_hidden_layers=2, intermediate_size=48,
                           scan_backend="triton")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).to(DEVICE, torch.float64).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    ids = torch.randint(3, 60, (3, 5), device=DEVICE)
    calls, projections = [], []
    norm_project, project_rows = modeling_lrnn.norm_project, modeling_lrnn.project_rows

    def counting(*args, **kwargs):
        calls.append(kwargs.get("swiglu"))
        return norm_project(*args, **kwargs)

    def decode(fused):
        if fused:
            monkeypatch.setattr(modeling_lrnn, "norm_project", counting)
            monkeypatch.setattr(modeling_lrnn, "project_rows", lambda *a: projections.append(1) or project_rows(*a))
        else:
            monkeypatch.setattr(modeling_lrnn, "decode_can_fuse", lambda *args, **kwargs: False)
            monkeypatch.setattr(modeling_lrnn, "decode_can_project", lambda *args, **kwargs: False)
        with torch.no_grad():
            out = model(ids, use_cache=True)
            cache, logits, tokens = out.past_key_values, [], []
            token = out.logits[:, -1:].argmax(-1)
            for _ in range(3):
                step = model(token, cache=cache, use_cache=True).logits
                logits.append(step)
                token = step.argmax(-1)
                tokens.append(token)
        monkeypatch.undo()
        return torch.cat(logits, 1), torch.cat(tokens, 1), [layer.state.clone() for layer in cache.layers]

    fused_logits, fused_tokens, fused_states = decode(True)
    assert calls.count(False) == calls.count(True) == 3 * config.num_hidden_layers
    assert len(projections) == 2 * 3 * config.num_hidden_layers  # the mixer's and the MLP's output projections
    plain_logits, plain_tokens, plain_states = decode(False)
    torch.testing.assert_close(fused_logits, plain_logits, rtol=1e-5, atol=1e-5)
    assert torch.equal(fused_tokens, plain_tokens)
    for fused_state, plain_state in zip(fused_states, plain_states):
        torch.testing.assert_close(fused_state, plain_state, rtol=1e-5, atol=1e-5)


def test_a_training_forward_and_a_prefill_do_not_fuse(monkeypatch):
    """The fused kernels have no backward and pay only for single tokens: not under autograd, not for T > 1."""
    config = hf_lrnn.HLRUConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, intermediate_size=32,
                                scan_backend="triton")
    model = AutoModelForCausalLM.from_config(config).to(DEVICE)
    monkeypatch.setattr(modeling_lrnn, "norm_project", lambda *a, **k: pytest.fail("fused under autograd"))
    monkeypatch.setattr(modeling_lrnn, "project_rows", lambda *a, **k: pytest.fail("project_rows under autograd"))
    ids = torch.randint(3, 60, (2, 1), device=DEVICE)
    model(ids, labels=ids).loss.backward()  # one token, gradients on
    with torch.no_grad():
        model(torch.randint(3, 60, (2, 4), device=DEVICE))  # a prefill


@pytest.mark.parametrize("arch", ["hlru", "bdlru"])
def test_compiled_decode_step_runs_the_fused_kernel_through_its_custom_op(arch, monkeypatch):
    """torch.compile(fullgraph=True) of a decode step traces norm_project as the custom op (ops.py) and runs the
    kernel: logits equal the eager (fused) step's, and the kernel's host function runs twice per layer."""
    torch._dynamo.reset()
    make = hf_lrnn.HLRUConfig if arch == "hlru" else hf_lrnn.BDLRUConfig
    config = make(vocab_size=64, hidden_size=40, num_hidden_layers=2, intermediate_size=48, scan_backend="triton",
                  **({"order": 2} if arch == "hlru" else {"block_size": 2}))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).to(DEVICE).eval()
    ids = torch.randint(3, 60, (2, 5), device=DEVICE)
    calls = []
    tensors_function = decode_triton.norm_project_tensors
    monkeypatch.setattr(decode_triton, "norm_project_tensors", lambda *a: calls.append(1) or tensors_function(*a))
    with torch.no_grad():
        cache = model(ids[:, :4], use_cache=True).past_key_values
        eager = model(ids[:, 4:], cache=cache, use_cache=True).logits
        cache = model(ids[:, :4], use_cache=True).past_key_values
        step = torch.compile(lambda new, c: model(new, cache=c, use_cache=True).logits, fullgraph=True)
        calls.clear()
        compiled = step(ids[:, 4:], cache)
    assert len(calls) == 2 * config.num_hidden_layers
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)


def test_norm_project_reads_strided_rows():
    """Rows that are a slice of a longer sequence (row stride 2K) and a delta of other strides: the same results as
    from contiguous copies, and a contiguous total."""
    generator = torch.Generator().manual_seed(5)
    K = 72
    norm, proj_a, proj_b = _modules(K, 24, 24, False, bias_b=True, dtype=torch.float64, generator=generator)
    long = torch.randn(3, 2, K, generator=generator, dtype=torch.float64).to(DEVICE)
    x = long[:, 1:]  # [3, 1, K], strides (2K, K, 1)
    delta = torch.randn(K, 3, generator=generator, dtype=torch.float64).to(DEVICE).T.unsqueeze(1)  # column-major
    with torch.no_grad():
        got = decode_triton.norm_project(x, delta, norm, False, proj_a, proj_b, swiglu=False)
        want = decode_triton.norm_project(x.contiguous(), delta.contiguous(), norm, False, proj_a, proj_b,
                                          swiglu=False)
    for g, w in zip(got, want):
        assert torch.equal(g, w)
    assert got[0].is_contiguous()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("rows", [1, 8])
def test_norm_project_at_model_size_matches_the_unfused_path_on_the_gpu(rows):
    """d = 768, SwiGLU 2048, BD-LRU m = 4's coefficient rows (3840), bfloat16, as in the benchmarks' models: against
    add_norm_triton + cuBLAS + silu_mul_triton, within bfloat16 rounding."""
    generator = torch.Generator().manual_seed(rows)
    K, N_mlp, N_value, N_coefficient = 768, 2048, 768, 3840
    norm, gate_proj, up_proj = _modules(K, N_mlp, N_mlp, False, bias_b=False, dtype=torch.bfloat16,
                                        generator=generator)
    _, value_proj, coefficient_proj = _modules(K, N_value, N_coefficient, False, bias_b=True, dtype=torch.bfloat16,
                                               generator=generator)
    for module in (gate_proj, up_proj, value_proj, coefficient_proj):  # the models' initialisation scale
        module.weight.data.mul_(0.04)
    x, delta = (torch.randn(rows, 1, K, generator=generator).to(DEVICE, torch.bfloat16) for _ in range(2))
    with torch.no_grad():
        total, normed = modeling_lrnn.apply_add_norm(norm, x, delta, True, for_projections=True)
        got_total, values, gates = decode_triton.norm_project(x, delta, norm, False, value_proj, coefficient_proj,
                                                              swiglu=False)
        assert torch.equal(got_total, total)
        torch.testing.assert_close(values, value_proj(normed), rtol=2e-2, atol=2e-2)
        torch.testing.assert_close(gates, coefficient_proj(normed), rtol=2e-2, atol=2e-2)
        _, activation, _ = decode_triton.norm_project(x, delta, norm, False, gate_proj, up_proj, swiglu=True)
        want = modeling_lrnn.silu_mul_triton(gate_proj(normed), up_proj(normed))
        torch.testing.assert_close(activation, want, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("kw", [dict(num_beams=3, do_sample=False), dict(do_sample=False)])
def test_generate_with_fused_steps_equals_unfused_generate(kw, monkeypatch):
    """generate() on the Triton backend, float64: beams (2 rows x 3 beams = 6 rows, reordered caches) and a
    left-padded greedy batch, fused decode steps against the same model with the fusion off: the same tokens."""
    config = hf_lrnn.BDLRUConfig(vocab_size=64, hidden_size=40, num_hidden_layers=2, intermediate_size=48,
                                 block_size=2, scan_backend="triton")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).to(DEVICE, torch.float64).eval()
    ids = torch.randint(3, 60, (2, 6), device=DEVICE)
    mask = torch.ones_like(ids)
    mask[1, :2] = 0  # a left-padded row
    args = dict(attention_mask=mask, max_new_tokens=6, pad_token_id=0, decode_graph=False, **kw)
    calls = []
    norm_project = modeling_lrnn.norm_project
    monkeypatch.setattr(modeling_lrnn, "norm_project", lambda *a, **k: calls.append(1) or norm_project(*a, **k))
    fused = model.generate(ids, **args)
    assert calls  # the decode steps did fuse
    monkeypatch.setattr(modeling_lrnn, "decode_can_fuse", lambda *a, **k: False)
    monkeypatch.setattr(modeling_lrnn, "decode_can_project", lambda *a, **k: False)
    unfused = model.generate(ids, **args)
    assert torch.equal(fused, unfused)


@pytest.mark.parametrize("rows", [1, 3])
@pytest.mark.parametrize("max_chunk_k", [64, None])
def test_project_rows_matches_float64_formula(rows, max_chunk_k, monkeypatch):
    """K = 200 in one step and in four (MAX_CHUNK_K = 64), N = 37 (not a multiple of BLOCK_N), float64 throughout:
    the kernel's float64 sums against x @ w^T."""
    if max_chunk_k is not None:
        monkeypatch.setattr(decode_triton, "MAX_CHUNK_K", max_chunk_k)
    generator = torch.Generator().manual_seed(rows)
    linear = nn.Linear(200, 37, bias=False).to(DEVICE, torch.float64)
    x = torch.randn(rows, 1, 200, generator=generator, dtype=torch.float64).to(DEVICE)
    with torch.no_grad():
        got = decode_triton.project_rows(x, linear)
    assert got.shape == (rows, 1, 37) and got.dtype == torch.float64
    torch.testing.assert_close(got, x @ linear.weight.T, rtol=1e-12, atol=1e-12)


def test_project_rows_reads_strided_rows_and_matches_linear_in_bfloat16():
    """Rows that are a slice of a longer sequence: the same results as from a contiguous copy; bfloat16 against
    nn.Linear (cuBLAS on the GPU) within bfloat16 rounding."""
    generator = torch.Generator().manual_seed(7)
    linear = nn.Linear(96, 40, bias=False).to(DEVICE, torch.float64)
    long = torch.randn(3, 2, 96, generator=generator, dtype=torch.float64).to(DEVICE)
    with torch.no_grad():
        assert torch.equal(decode_triton.project_rows(long[:, 1:], linear),
                           decode_triton.project_rows(long[:, 1:].contiguous(), linear))
        linear = linear.to(torch.bfloat16)
        x = long[:, 1:].to(torch.bfloat16)
        got = decode_triton.project_rows(x, linear)
        assert got.dtype == torch.bfloat16
        torch.testing.assert_close(got.float(), linear(x).float(), rtol=2e-2, atol=2e-2)


def test_can_project_only_where_it_computes_the_same():
    linear = nn.Linear(16, 8, bias=False).to(DEVICE)
    x = torch.randn(2, 1, 16, device=DEVICE)
    with torch.no_grad():
        assert decode_triton.can_project(x, linear)
        assert not decode_triton.can_project(torch.randn(2, 2, 16, device=DEVICE), linear)  # a prefill
        rows = decode_triton.MAX_ROWS + 1
        assert not decode_triton.can_project(torch.randn(rows, 1, 16, device=DEVICE), linear)
        assert not decode_triton.can_project(x.double(), linear)  # dtypes differ
        assert not decode_triton.can_project(x, nn.Linear(16, 8, bias=True).to(DEVICE))
        assert not decode_triton.can_project(x, _Adapter(16, 8, bias=False).to(DEVICE))
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            assert not decode_triton.can_project(x, linear)
    assert not decode_triton.can_project(x, linear)  # autograd on


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("rows", [1, 8])
def test_project_rows_at_model_size_matches_cublas_on_the_gpu(rows):
    """The benchmarks' output projections (768 -> 768, and the MLP's 2048 -> 768), bfloat16: against cuBLAS within
    bfloat16 rounding, and against a float64 product to float32 sums' precision."""
    generator = torch.Generator().manual_seed(rows)
    for K, N in ((768, 768), (2048, 768)):
        weight = (torch.randn(N, K, generator=generator) * 0.04).to(DEVICE, torch.bfloat16)
        linear = nn.Linear(K, N, bias=False, device=DEVICE, dtype=torch.bfloat16)
        linear.weight.data.copy_(weight)
        x = torch.randn(rows, 1, K, generator=generator).to(DEVICE, torch.bfloat16)
        with torch.no_grad():
            got = decode_triton.project_rows(x, linear)
            torch.testing.assert_close(got, linear(x), rtol=2e-2, atol=2e-2)
            exact = (x.double() @ weight.double().T).to(torch.bfloat16)
            torch.testing.assert_close(got, exact, rtol=1e-2, atol=1e-3)
