"""Triton scan kernels on a CUDA GPU against the float64 reference at realistic sizes (skipped without CUDA).

Tolerances: relative L2 error ||x - ref|| / ||ref|| against hf_lrnn.scan_torch run in float64 on the same
(rounded) inputs. float32 inputs: 1e-5 for the states and the final state, 1e-4 for gradients; bfloat16 inputs:
1e-2 for the states, 2e-2 for gradients. The chunked (time-parallel) mode is held to the same tolerances as the
sequential one.
"""

import os

import pytest
import torch
from helpers import GPU

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="runs the compiled kernels, not the interpreter"),
]

if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
    from hf_lrnn.scan_torch import bdlru_scan_torch, hlru_scan_torch
    from hf_lrnn.scan_triton import bdlru_scan_triton, hlru_scan_triton

TOL = {torch.float32: (1e-5, 1e-4), torch.bfloat16: (1e-2, 2e-2)}


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def _inputs(blocked, B, T, D, m, dtype, seed=0):
    torch.manual_seed(seed)
    N = D // m
    gshape = (B, T, N, m, m + 1) if blocked else (B, T, N, m + 1)
    vshape = (B, T, N, m) if blocked else (B, T, N)
    g = (torch.randn(gshape, device=GPU) * 2).to(dtype).requires_grad_()
    v = torch.randn(vshape, device=GPU).to(dtype).requires_grad_()
    h0 = torch.randn(B, N, m, device=GPU).requires_grad_()
    return g, v, h0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("blocked,m", [(False, 1), (False, 2), (False, 4), (False, 8),
                                       (True, 1), (True, 2), (True, 4), (True, 8), (True, 16)])
def test_against_float64_reference(blocked, m, dtype):
    B, T, D = 2, 600, 256  # T: not a multiple of the m = 1 tile (16) nor of the forced chunk (128)
    g, v, h0 = _inputs(blocked, B, T, D, m, dtype)
    do = torch.randn(v.shape, device=GPU, dtype=torch.float64)
    df = torch.randn(h0.shape, device=GPU, dtype=torch.float64)
    ref = bdlru_scan_torch if blocked else hlru_scan_torch
    rg, rv, rh = (x.detach().double().requires_grad_() for x in (g, v, h0))
    rout, rfin = ref(rg, rv, rh, "softmax")
    rgrads = torch.autograd.grad((rout * do).sum() + (rfin * df).sum(), [rg, rv, rh])
    fn = bdlru_scan_triton if blocked else hlru_scan_triton
    tol_f, tol_g = TOL[dtype]
    for chunk in (0, 128, None):  # sequential, forced chunked, automatic
        out, fin = fn(g, v, h0, "softmax", True, None, chunk)
        grads = torch.autograd.grad((out.double() * do).sum() + (fin.double() * df).sum(), [g, v, h0])
        assert rel(out, rout) < tol_f, (chunk, "states", rel(out, rout))
        assert rel(fin, rfin) < tol_f, (chunk, "final", rel(fin, rfin))
        for name, a, b in zip(("gates", "values", "h0"), grads, rgrads):
            assert rel(a, b) < tol_g, (chunk, name, rel(a, b))


@pytest.mark.parametrize("blocked,m", [(False, 1), (False, 4), (True, 4), (True, 16)])
def test_long_sequence_no_drift(blocked, m):
    # T = 65536, batch 1: no NaN, no growth (softmax gates: |h_t| <= max |v|), chunked == sequential
    g, v, _ = _inputs(blocked, 1, 65536, 256, m, torch.bfloat16, seed=1)
    g, v = g.detach(), v.detach()
    fn = bdlru_scan_triton if blocked else hlru_scan_triton
    with torch.no_grad():
        out_c, fin_c = fn(g, v, None, "softmax", True, None, None)
        out_s, fin_s = fn(g, v, None, "softmax", True, None, 0)
    assert torch.isfinite(out_c.float()).all() and torch.isfinite(fin_c).all()
    assert out_c.float().abs().max() <= v.float().abs().max() * 1.01
    assert rel(fin_c, fin_s) < 1e-5
    assert rel(out_c, out_s) < 1e-2  # bf16 output rounding only


@pytest.mark.parametrize("activation", ["softmax", "tanh"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("blocked,m", [(False, 2), (True, 4)], ids=["hlru-m2", "bdlru-m4"])
def test_million_steps_state_bound(blocked, m, dtype, activation):
    # T = 2^20: no NaN or Inf in states, final state or gradients, and Proposition 1 at every step:
    # |state_t| <= max(|initial state|, max_{u<=t} |v_u|) per channel (H-LRU) / per block (BD-LRU)
    T = 2**20
    g, v, h0 = _inputs(blocked, 1, T, 64, m, dtype, seed=3)
    fn = bdlru_scan_triton if blocked else hlru_scan_triton
    out, fin = fn(g, v, h0, activation, True, None, None)
    grads = torch.autograd.grad(out.float().square().mean() + fin.square().mean(), [g, v, h0])
    assert torch.isfinite(out.float()).all() and torch.isfinite(fin).all()
    assert all(torch.isfinite(x.float()).all() for x in grads)
    with torch.no_grad():
        value_mag = v.float().abs()[0]  # [T, N] or [T, N, m]
        if blocked:
            value_mag = value_mag.amax(-1, keepdim=True)  # the bound is per block
        bound = torch.maximum(value_mag.cummax(0).values, h0.detach().abs().amax(-1)[0].unsqueeze(-1) if blocked
                              else h0.detach().abs().amax(-1)[0])  # [T, N(, 1)]
        slack = 1e-5 if dtype == torch.float32 else 8e-3  # rounding of the stored states
        excess = (out.float()[0].abs() - bound * (1 + slack)).amax().item()
        assert excess <= 1e-6, f"state exceeds the Proposition-1 bound by {excess}"
        assert fin.abs().amax() <= bound[-1].amax() * (1 + slack)


def test_varlen_and_expanded_gates_gpu():
    torch.manual_seed(2)
    cu = torch.tensor([0, 100, 1000, 1001, 3000], device=GPU, dtype=torch.int32)
    g = torch.randn(1, 3000, 64, 3, device=GPU, requires_grad=True)
    v = torch.randn(1, 3000, 64, device=GPU, requires_grad=True)
    h0 = torch.randn(4, 64, 2, device=GPU, requires_grad=True)
    rg, rv, rh = (x.detach().double().requires_grad_() for x in (g, v, h0))
    rout, rfin = hlru_scan_torch(rg, rv, rh, "softmax", cu)
    (rout.sum() + rfin.sum()).backward()
    for chunk in (0, 256):
        out, fin = hlru_scan_triton(g, v, h0, "softmax", True, cu, chunk)
        gg, gv, gh = torch.autograd.grad(out.sum() + fin.sum(), [g, v, h0])
        assert rel(out, rout) < 1e-5 and rel(fin, rfin) < 1e-5
        assert rel(gg, rg.grad) < 1e-4 and rel(gv, rv.grad) < 1e-4 and rel(gh, rh.grad) < 1e-4
    # a learned [N, m, m+1] parameter expanded over batch and time
    p = torch.rand(16, 4, 5, device=GPU, requires_grad=True)
    v = torch.randn(2, 512, 16, 4, device=GPU)
    out, _ = bdlru_scan_triton(p.expand(2, 512, 16, 4, 5), v, None, "softmax", False, None)
    (gp,) = torch.autograd.grad(out.sum(), [p])
    rp = p.detach().double().requires_grad_()
    rout, _ = bdlru_scan_torch(rp.expand(2, 512, 16, 4, 5), v.double())
    rout.sum().backward()
    assert rel(out, rout) < 1e-5 and rel(gp, rp.grad) < 1e-4


@pytest.mark.parametrize("blocked", [False, True])
@pytest.mark.parametrize("B,T,N,packed", [(1, 65536, 256, False), (8, 4096, 1024, False), (32, 2048, 64, False),
                                          (1, 50000, 128, True)])
def test_first_order_look_back_matches_sequential(blocked, B, T, N, packed):
    """m = 1 runs the single-pass look-back kernels: with thousands of chunks in flight, their look-backs compose
    aggregates and wait on each other for real. Against the sequential kernel (itself checked against the float64
    reference above), five times over to catch a race."""
    g, v, h0 = _inputs(blocked, B, T, N, 1, torch.float32, seed=4)
    cu = None
    if packed:  # 300 sequences of random lengths, some empty
        cuts = torch.randint(0, T, (299,), generator=torch.Generator().manual_seed(0)).sort().values
        cu = torch.cat([torch.tensor([0]), cuts, torch.tensor([T])]).to(device=GPU, dtype=torch.int32)
        h0 = torch.randn(300, N, 1, device=GPU, requires_grad=True)
    fn = bdlru_scan_triton if blocked else hlru_scan_triton
    do = torch.randn(v.shape, device=GPU)
    df = torch.randn(h0.shape, device=GPU)

    def run(chunk):
        out, fin = fn(g, v, h0, "softmax", True, cu, chunk)
        return [out, fin, *torch.autograd.grad((out * do).sum() + (fin * df).sum(), [g, v, h0])]

    expected = run(0)
    for _ in range(5):
        for name, a, b in zip(("states", "final", "gates", "values", "h0"), run(None), expected):
            assert rel(a, b) < (1e-5 if name in ("states", "final") else 1e-4), (name, rel(a, b))


@pytest.mark.parametrize("blocked,m", [(False, 2), (False, 8), (True, 4), (True, 8)])
def test_decode_step_in_place_on_gpu(blocked, m):
    """A decode step written into the state (`ops.scan_step_into`, batch 64, bfloat16 inputs): the states and new state
    of the scan itself, and H-LRU's bfloat16 read-out the new state rounded as torch rounds it."""
    from hf_lrnn.ops import scan_step_into

    g, v, h0 = _inputs(blocked, 64, 1, 768, m, torch.bfloat16)
    g, v, h0 = g.detach(), v.detach(), h0.detach()
    scan = bdlru_scan_triton if blocked else hlru_scan_triton
    expected_states, expected_final = scan(g, v, h0, "softmax", True)
    state = h0.clone()
    readout = None if blocked else torch.empty(64, 1, h0[0].numel(), device=GPU, dtype=torch.bfloat16)
    states = scan_step_into(blocked, g, v, state, "softmax", "triton", readout=readout)
    assert torch.equal(states, expected_states) and torch.equal(state, expected_final)
    if not blocked:
        assert torch.equal(readout, expected_final.reshape(64, 1, -1).to(torch.bfloat16))


def test_ftz_exp_and_reciprocal_against_float64():
    """`_exp` and `_reciprocal` (ex2.approx.ftz / rcp.approx.ftz, what every normalisation computes with): exp equal
    bit for bit to Triton's own form (FTZ=False) wherever the result is a normal float32, and within the error of
    ex2(x log2 e) of float64 there; 0 where Triton's would be subnormal (x < -87.34), inf past float32's range (both
    forms); exp(0) = 1 and exp(-inf) = 0; the reciprocal within 2 ulp of float64 (Triton's div.full: within 4 of it)."""
    import triton
    import triton.language as tl

    from hf_lrnn.scan_triton import _exp, _reciprocal

    @triton.jit
    def kernel(x, exp_fast, exp_triton, reciprocal_fast, reciprocal_triton, n, BLOCK: tl.constexpr):
        offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offsets < n
        v = tl.load(x + offsets, mask=mask, other=1.0)
        tl.store(exp_fast + offsets, _exp(v), mask=mask)
        tl.store(exp_triton + offsets, _exp(v, False), mask=mask)
        tl.store(reciprocal_fast + offsets, _reciprocal(v), mask=mask)
        tl.store(reciprocal_triton + offsets, _reciprocal(v, False), mask=mask)

    special = [0.0, 1.0, -1.0, 1e-30, 3e38, float("-inf")]
    spread = torch.randn(100_000, generator=torch.Generator().manual_seed(0)) * 30  # some past 88.7
    x = torch.cat([torch.linspace(-100.0, 80.0, 200_001), torch.tensor(special), spread]).to(GPU)
    outs = [torch.empty_like(x) for _ in range(4)]
    kernel[(triton.cdiv(x.numel(), 1024),)](x, *outs, x.numel(), BLOCK=1024)
    exp_fast, exp_triton, reciprocal_fast, reciprocal_triton = (o.double() for o in outs)
    xd = x.double()
    normal = (xd > -87.3) & (xd < 88.7)  # 2^-126 <= exp(x) < 2^128: a normal float32
    assert torch.equal(exp_fast[normal], exp_triton[normal])
    assert (exp_fast[xd > 88.8] == float("inf")).all() and (exp_triton[xd > 88.8] == float("inf")).all()
    # ex2.approx (2^-22) of x log2(e) rounded to float32 (|x| 2^-24 relative in the result)
    tolerance = (2.0 ** -21 + xd.abs() * 2.0 ** -23) * torch.exp(xd)
    assert ((exp_fast - torch.exp(xd)).abs() <= tolerance)[normal].all()
    assert (exp_fast[xd < -87.34] == 0).all()  # flushed, where Triton's form keeps a subnormal
    assert (exp_triton[(xd < -87.4) & (xd > -100)] > 0).all()
    finite = (xd.abs() > 1e-37) & (xd.abs() < 8e37)
    assert ((reciprocal_fast - 1 / xd).abs() <= 2 * 2.0 ** -23 * (1 / xd).abs())[finite].all()
    assert ((reciprocal_triton - 1 / xd).abs() <= 4 * 2.0 ** -23 * (1 / xd).abs())[finite].all()
    at = {value: 200_001 + i for i, value in enumerate(special)}
    assert exp_fast[at[0.0]].item() == 1.0 and reciprocal_fast[at[1.0]].item() == 1.0
    assert exp_fast[at[float("-inf")]].item() == 0.0
