"""torch.compile of the scans (fullgraph=True), the Triton custom ops' fake / autograd registrations, and the ops of
a remote-code copy of hf_lrnn.ops registered next to the installed package's in one process."""

import importlib
import os
import sys

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend
from torch._subclasses.fake_tensor import FakeTensorMode

from helpers import GPU, tiny_model
from hf_lrnn import ops

NEEDS_TRITON = pytest.mark.skipif(
    not ops.triton_available() or (not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"),
    reason="needs Triton (CUDA, or TRITON_INTERPRET=1 on CPU)",
)
DEVICE = GPU if torch.cuda.is_available() else "cpu"


def inputs(arch, B=2, T=5, N=3, m=2, dtype=torch.float64, device="cpu", h0=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    gshape = (B, T, N, m, m + 1) if arch == "bdlru" else (B, T, N, m + 1)
    vshape = (B, T, N, m) if arch == "bdlru" else (B, T, N)
    g = torch.randn(gshape, generator=gen, dtype=dtype).to(device).requires_grad_()
    v = torch.randn(vshape, generator=gen, dtype=dtype).to(device).requires_grad_()
    x0 = torch.randn(B, N, m, generator=gen, dtype=dtype).to(device).requires_grad_() if h0 else None
    return g, v, x0


def scan_fn(arch, backend, act="softmax"):
    scan = ops.bdlru_scan if arch == "bdlru" else ops.hlru_scan

    def fn(g, v, x0, cu_seqlens=None):
        states, final = scan(g, v, x0, act, output_final_state=True, backend=backend, cu_seqlens=cu_seqlens)
        return states * 2 + 1, final

    return fn


def outputs_and_grads(fn, g, v, x0, cu=None):
    states, final = fn(g, v, x0, cu)
    leaves = [t for t in (g, v, x0) if t is not None]
    loss = (states.double().sin()).sum() + (final.double() ** 2).sum()
    return (states.detach(), final.detach()) + torch.autograd.grad(loss, leaves)


def compiled(fn, backend):
    counter = CompileCounterWithBackend(backend)
    return torch.compile(fn, fullgraph=True, backend=counter), counter


# ------------------------------------------------------------------------------- (a) the torch backend compiles


@pytest.mark.parametrize("compile_backend", ["eager", "aot_eager"])
@pytest.mark.parametrize("act", ["softmax", "tanh"])
def test_torch_backend_compiles_fullgraph_and_matches_eager(arch, compile_backend, act):
    torch._dynamo.reset()
    fn = scan_fn(arch, "torch", act)
    g, v, x0 = inputs(arch)
    expected = outputs_and_grads(fn, g, v, x0)
    cfn, counter = compiled(fn, compile_backend)
    got = outputs_and_grads(cfn, g, v, x0)
    assert counter.frame_count == 1 and counter.op_count > 0
    assert len(got) == len(expected) == 5
    for a, b in zip(got, expected):
        assert a.dtype == b.dtype == torch.float64
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_compiled_torch_backend_without_initial_state(arch):
    torch._dynamo.reset()
    fn = scan_fn(arch, "torch")
    g, v, _ = inputs(arch, T=3, seed=1)
    expected = outputs_and_grads(fn, g, v, None)
    cfn, counter = compiled(fn, "aot_eager")
    got = outputs_and_grads(cfn, g, v, None)
    assert counter.frame_count == 1
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_validation_still_raises_under_compile():
    torch._dynamo.reset()
    g, v, _ = inputs("hlru")
    cfn = torch.compile(scan_fn("hlru", "torch"), fullgraph=True, backend="eager")
    with pytest.raises(Exception, match="values must have shape"):
        cfn(g, v[:, :, :2], None)


# ------------------------------------------------------------------------------- (b) the Triton custom ops


def fwd_op(arch):
    return ops.bdlru_scan_fwd_op if arch == "bdlru" else ops.hlru_scan_fwd_op


def bwd_op(arch):
    return ops.bdlru_scan_bwd_op if arch == "bdlru" else ops.hlru_scan_bwd_op


def test_installed_package_uses_the_hf_lrnn_namespace():
    if not ops.triton_available():
        pytest.skip("needs Triton")
    assert ops.OP_NAMESPACE == "hf_lrnn"
    assert torch.ops.hf_lrnn.hlru_scan_fwd.default._schema.name == "hf_lrnn::hlru_scan_fwd"
    assert torch.ops.hf_lrnn.bdlru_scan_bwd.default._schema.name == "hf_lrnn::bdlru_scan_bwd"


@pytest.mark.parametrize("varlen", [False, True])
@pytest.mark.parametrize("h0", [False, True])
@pytest.mark.parametrize("want_final", [False, True])
def test_fake_registration_shapes_and_dtypes(arch, varlen, h0, want_final):
    if not ops.triton_available():
        pytest.skip("needs Triton")
    B, T, N, m = (1, 7, 3, 2) if varlen else (2, 7, 3, 2)
    S = 3 if varlen else B
    with FakeTensorMode():
        g = torch.empty((B, T, N, m, m + 1) if arch == "bdlru" else (B, T, N, m + 1), dtype=torch.bfloat16)
        v = torch.empty((B, T, N, m) if arch == "bdlru" else (B, T, N), dtype=torch.float16)
        x0 = torch.empty(S, N, m, dtype=torch.float64) if h0 else None
        cu = torch.empty(S + 1, dtype=torch.int32) if varlen else None
        states, final = fwd_op(arch)(g, v, x0, 0, want_final, cu, None)
        dg, dv, dx0 = bwd_op(arch)(g, v, states, x0, torch.empty_like(states), None, 0, cu, None)
    assert states.shape == v.shape and states.dtype == torch.float16
    assert final.dtype == torch.float32 and tuple(final.shape) == ((S, N, m) if want_final else (0,))
    assert dg.shape == g.shape and dg.dtype == torch.bfloat16
    assert dv.shape == v.shape and dv.dtype == torch.float16
    assert dx0.dtype == torch.float32 and tuple(dx0.shape) == ((S, N, m) if h0 else (0,))


@NEEDS_TRITON
def test_opcheck_triton_ops():
    # schema, fake tensor, autograd registration and dispatch of both forward ops (the backward ops run in the
    # autograd checks): H-LRU with an initial state, BD-LRU with packed sequences
    g, v, x0 = inputs("hlru", B=2, T=4, N=2, m=2, dtype=torch.float32, device=DEVICE)
    torch.library.opcheck(ops.hlru_scan_fwd_op, (g, v, x0, 0, True, None, None))
    g, v, _ = inputs("bdlru", B=1, T=5, N=2, m=2, dtype=torch.float32, device=DEVICE)
    x0 = torch.randn(2, 2, 2, device=DEVICE, requires_grad=True)
    cu = torch.tensor([0, 2, 5], dtype=torch.int32, device=DEVICE)
    torch.library.opcheck(ops.bdlru_scan_fwd_op, (g, v, x0, 1, True, cu, None))
    g, v, x0 = inputs("hlru", B=2, T=20, N=3, m=1, dtype=torch.float32, device=DEVICE)  # the look-back kernels
    torch.library.opcheck(ops.hlru_scan_fwd_op, (g, v, x0, 0, True, None, None))


@NEEDS_TRITON
@pytest.mark.parametrize("arch", ["hlru", "bdlru"])
def test_compiled_decode_step_updates_the_state_in_place(arch):
    """Under torch.compile (inductor, fullgraph) a decode step through `scan_step_into` is one custom op that mutates
    the state (and H-LRU's read-out buffer): the op's schema, fake tensor and dispatch pass opcheck, the state and the
    read-out end as in eager (the state's address kept), and inductor runs the op on the state itself, with no copy
    back into it."""
    from torch._inductor.utils import run_and_get_code

    blocked = arch == "bdlru"
    op = ops.bdlru_scan_step_into_op if blocked else ops.hlru_scan_step_into_op
    g, v, x0 = inputs(arch, B=2, T=1, N=3, m=2, dtype=torch.float32, device=DEVICE)
    g, v, x0 = g.detach(), v.detach(), x0.detach()
    window = None if blocked else torch.empty(2, 1, 6, device=DEVICE)  # [B, 1, N*m]
    torch.library.opcheck(op, (g, v, x0.clone(), window, 0), test_utils=("test_schema", "test_faketensor"))
    eager_state = x0.clone()
    eager_window = None if blocked else torch.empty(2, 1, 6, device=DEVICE)
    eager_states = ops.scan_step_into(blocked, g, v, eager_state, "softmax", "triton", readout=eager_window)

    def step(g, v, state):
        readout = None if blocked else v.new_empty(2, 1, 6)
        states = ops.scan_step_into(blocked, g, v, state, "softmax", "triton", readout=readout)
        return states * 2, (states if blocked else readout) + 1

    state = x0.clone()
    address = state.data_ptr()
    torch._dynamo.reset()
    with torch.no_grad():
        (doubled, shifted), code = run_and_get_code(torch.compile(step, fullgraph=True), g, v, state)
    assert torch.equal(doubled, eager_states * 2)
    assert torch.equal(state, eager_state) and state.data_ptr() == address and not torch.equal(state, x0)
    if not blocked:
        assert torch.equal(eager_window.view(2, 3, 2), eager_state)  # the window is the new state, rounded (float32)
        assert torch.equal(shifted, eager_window + 1)
    source = "\n".join(code)
    assert f"{arch}_scan_step_into" in source and "copy_" not in source, source


@NEEDS_TRITON
@pytest.mark.parametrize("m", [1, 2])  # m = 1: the first-order look-back kernels
@pytest.mark.parametrize("varlen", [False, True])
def test_triton_backend_compiles_fullgraph_to_one_custom_op(arch, varlen, m):
    # the compiled graph holds the forward op (opaque), and forward and gradients match eager
    torch._dynamo.reset()
    graphs = []

    def recording_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    fn = scan_fn(arch, "triton")
    g, v, x0 = inputs(arch, B=1 if varlen else 2, T=5, N=2, m=m, dtype=torch.float32, device=DEVICE)
    cu = None
    if varlen:
        cu = torch.tensor([0, 3, 5], device=DEVICE)
        x0 = torch.randn(2, 2, m, device=DEVICE, requires_grad=True)
    expected = outputs_and_grads(fn, g, v, x0, cu)
    cfn = torch.compile(fn, fullgraph=True, backend=recording_backend)
    got = outputs_and_grads(cfn, g, v, x0, cu)
    assert len(graphs) == 1
    targets = [node.target for node in graphs[0].graph.nodes if node.op == "call_function"]
    assert getattr(torch.ops.hf_lrnn, f"{arch}_scan_fwd").default in targets
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@NEEDS_TRITON
def test_triton_backend_aot_eager_matches_reference(arch):
    torch._dynamo.reset()
    g, v, x0 = inputs(arch, T=4, N=2, m=2, dtype=torch.float32, device=DEVICE)
    cfn, counter = compiled(scan_fn(arch, "triton"), "aot_eager")
    got = outputs_and_grads(cfn, g, v, x0)
    ref = [t.detach().double().requires_grad_() for t in (g, v, x0)]
    expected = outputs_and_grads(scan_fn(arch, "torch"), *ref)
    assert counter.frame_count == 1
    assert got[1].dtype == torch.float32 and got[4].dtype == torch.float32  # final state, d initial state
    for a, b in zip(got, expected):
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------- (c) remote code in the same process


def loaded_config_auto_map(folder):
    import json

    with open(folder / "config.json") as f:
        return json.load(f)["auto_map"]


@NEEDS_TRITON
def test_remote_code_copy_registers_its_own_ops(arch, tmp_path):
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    import hf_lrnn.ops  # noqa: F401  (the installed package's ops are registered first)

    assert ops.OP_NAMESPACE == "hf_lrnn"
    # on the GPU where there is one: the Triton backend on CPU tensors needs TRITON_INTERPRET=1
    model = tiny_model(arch, m=2, num_units=3, scan_backend="triton").to(DEVICE)
    ids = torch.randint(3, 37, (2, 5), device=DEVICE)
    with torch.no_grad():
        expected = model(ids).logits
    remote_modules = []
    for name in ("first", "second", "edited"):
        folder = tmp_path / name / "model"
        model.save_pretrained(folder)
        assert (folder / "ops.py").is_file()
        if name == "edited":  # other code in a folder of the same name: a new module, imported in this process too
            with open(folder / "ops.py", "a") as f:
                f.write("# edited\n")
        # what AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True) does without hf_lrnn registered
        class_ref = loaded_config_auto_map(folder)["AutoModelForCausalLM"]
        loaded = get_class_from_dynamic_module(class_ref, str(folder)).from_pretrained(folder).to(DEVICE).eval()
        assert type(loaded).__module__.startswith("transformers_modules"), type(loaded).__module__
        remote_ops = sys.modules[type(loaded).__module__.rpartition(".")[0] + ".ops"]
        assert remote_ops is not ops and remote_ops.OP_NAMESPACE.startswith("hf_lrnn_transformers_modules_")
        assert getattr(torch.ops, remote_ops.OP_NAMESPACE).bdlru_scan_bwd.default is not None
        remote_modules.append(remote_ops)
        assert loaded.config.scan_backend == "triton"
        with torch.no_grad():
            torch.testing.assert_close(loaded(ids).logits, expected, rtol=1e-5, atol=1e-5)
    first, second, edited = remote_modules
    assert second is first  # the same code is imported once
    assert edited is not first and edited.OP_NAMESPACE not in (first.OP_NAMESPACE, ops.OP_NAMESPACE)

    # executing a copy again under the same module name (as transformers does when a module's file changes) registers
    # under a new namespace instead of raising, and its ops work
    old_namespace = edited.OP_NAMESPACE
    importlib.reload(edited)
    assert edited.OP_NAMESPACE == old_namespace + "_2"
    g, v, x0 = inputs(arch, T=3, N=2, m=2, dtype=torch.float32, h0=True, device=DEVICE)
    scan = edited.bdlru_scan if arch == "bdlru" else edited.hlru_scan
    got = scan(g, v, x0, output_final_state=True, backend="triton")
    ref = scan(g, v, x0, output_final_state=True, backend="torch")
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------- the models, compiled


@pytest.mark.parametrize("arch", ["hlru", "bdlru"])
def test_a_training_step_of_the_model_compiles_with_fullgraph(arch):
    # no mask, no cache (training): the forward reads no tensor values under torch.compile, so one graph
    torch._dynamo.reset()
    model = tiny_model(arch, m=3).double().train()
    model.config.scan_backend = "torch"
    ids = torch.randint(3, 37, (2, 9), generator=torch.Generator().manual_seed(0))

    def step(m):
        out = m(input_ids=ids, labels=ids)
        grads = torch.autograd.grad(out.loss, [p for p in m.parameters() if p.requires_grad])
        return out.loss, out.logits, grads

    eager_loss, eager_logits, eager_grads = step(model)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    loss, logits, grads = step(compiled)
    torch.testing.assert_close(loss, eager_loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(logits, eager_logits, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads, eager_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("m", [1, 2])
def test_export_and_fullgraph_compile_with_left_padding(arch, m):
    """torch.export and torch.compile(fullgraph=True) of the causal LM with a left-padded attention mask: no branch on
    tensor values stops them, and the logits equal the eager model's (which reads the mask) at every position."""
    model = tiny_model(arch, m=m).eval()
    ids = torch.randint(3, 37, (3, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    mask[2, :1] = 0
    with torch.no_grad():
        eager = model(ids, attention_mask=mask, use_cache=False).logits
        exported = torch.export.export(model, (ids,), kwargs=dict(attention_mask=mask, use_cache=False))
        torch.testing.assert_close(exported.module()(ids, attention_mask=mask, use_cache=False).logits, eager)
        torch._dynamo.reset()
        compiled = torch.compile(model, fullgraph=True)
        torch.testing.assert_close(compiled(ids, attention_mask=mask, use_cache=False).logits, eager)
        unpadded = torch.ones_like(mask)  # the same compiled model, another mask: still equal
        torch.testing.assert_close(compiled(ids, attention_mask=unpadded, use_cache=False).logits,
                                   model(ids, attention_mask=unpadded, use_cache=False).logits)
