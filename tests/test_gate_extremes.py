"""Gate normalisation at extreme logits (docs/spec.md, "Gate normalisation"), on both backends.

Every map is defined for any finite logits, so forward outputs, final states and all gradients must be finite and
agree with the float64 torch reference run on the same (already rounded) inputs:

* softmax subtracts the group maximum;
* sigmoid is computed in log space, c = softmax(logsigmoid(z)). The direct quotient sigmoid(z_i) / sum_j
  sigmoid(z_j) is 0/0 once every sigmoid of a group underflows (below about -104 in float32, -745 in float64),
  while the limit is well defined: c -> softmax(z) as all z -> -inf;
* relu / tanh / linear divide by at least (m+1) * RELU_EPS or SIGNED_EPS.

"none" is unnormalised by design (the coefficients are the logits, so states grow like (m * 1e4)^T at 1e4). It is
tested on the same cases with T = 5, where every value stays inside the float32 range: the kernels must then
agree with the reference and produce no NaN/inf. Longer sequences overflow to inf by design and are not tested.

The Triton backend runs under the interpreter on CPU (tests/conftest.py sets TRITON_INTERPRET=1) or on CUDA.
"""

import os

import pytest
import torch

from hf_lrnn.ops import bdlru_scan, hlru_scan
from hf_lrnn.scan_torch import GATE_ACTIVATIONS, normalize_gates
from helpers import GPU

try:
    import triton  # noqa: F401

    HAVE_TRITON = True
except ImportError:
    HAVE_TRITON = False

TRITON_DEVICE = GPU if torch.cuda.is_available() else "cpu"
TRITON_OK = HAVE_TRITON and (torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1")
BACKENDS = ["torch", pytest.param("triton", marks=pytest.mark.skipif(not TRITON_OK, reason="needs Triton (CUDA "
                                                                                              "or interpreter)"))]

# relative L2 tolerance against the float64 reference on the same rounded inputs (as tests/test_scan_triton.py)
TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2}

PATTERNS = ("plus_1e4", "minus_1e4", "all_equal", "minus_1e4_spread", "minus_200_spread", "mixed_1e4")
ARCHS = ("hlru", "bdlru")


def make_logits(pattern, shape, gen):
    """Gate logits of one extreme pattern (float32; rounded to the test dtype by the caller)."""
    noise = torch.randn(shape, generator=gen)
    if pattern == "plus_1e4":
        return torch.full(shape, 1e4)
    if pattern == "minus_1e4":
        return torch.full(shape, -1e4)
    if pattern == "all_equal":
        return torch.full(shape, 0.75)
    if pattern == "minus_1e4_spread":  # all sigmoids underflow; the group still has a well-defined softmax limit
        return -1e4 + 3.0 * noise
    if pattern == "minus_200_spread":
        return -200.0 + 3.0 * noise
    if pattern == "mixed_1e4":
        return torch.where(noise > 0, 1e4, -1e4)
    raise ValueError(pattern)


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def scan_case(arch, backend, act, pattern, dtype, m, B=2, T=5, N=2, seed=0):
    """Run one case forward and backward; return (outputs + gradients, float64 reference of the same)."""
    blocked = arch == "bdlru"
    gen = torch.Generator().manual_seed(seed)
    gshape = (B, T, N, m, m + 1) if blocked else (B, T, N, m + 1)
    vshape = (B, T, N, m) if blocked else (B, T, N)
    gates = make_logits(pattern, gshape, gen).to(dtype)
    values = torch.randn(vshape, generator=gen).to(dtype)
    h0 = torch.randn(B, N, m, generator=gen)
    d_out = torch.randn(vshape, generator=gen, dtype=torch.float64)
    d_fin = torch.randn(B, N, m, generator=gen, dtype=torch.float64)
    op = bdlru_scan if blocked else hlru_scan

    def run(g, v, h, backend, device):
        g, v, h = (x.detach().to(device).requires_grad_() for x in (g, v, h))
        out, fin = op(g, v, h, act, output_final_state=True, backend=backend)
        loss = (out.double() * d_out.to(device)).sum() + (fin.double() * d_fin.to(device)).sum()
        loss.backward()
        return [x.detach().cpu() for x in (out, fin, g.grad, v.grad, h.grad)]

    device = TRITON_DEVICE if backend == "triton" else "cpu"
    got = run(gates, values, h0, backend, device)
    want = run(gates.double(), values.double(), h0.double(), "torch", "cpu")
    return got, want


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("act", GATE_ACTIVATIONS)
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_extreme_logits_forward_backward_finite_and_match_float64(backend, arch, act, pattern, dtype):
    m = 1 + (PATTERNS.index(pattern) + ARCHS.index(arch)) % 3  # every pattern sees m = 1, 2, 3 over the two archs
    got, want = scan_case(arch, backend, act, pattern, dtype, m)
    names = ("states", "final_state", "d_gates", "d_values", "d_initial_state")
    for name, g, w in zip(names, got, want):
        assert torch.isfinite(w).all(), f"float64 reference {name} not finite"  # "none": T is short enough
        assert torch.isfinite(g).all(), f"{name} has NaN/inf ({backend}, {act}, {pattern}, {dtype}, m={m})"
        assert rel(g, w) < TOL[dtype], f"{name}: rel err {rel(g, w):.2e} ({backend}, {act}, {pattern}, m={m})"


# ---------------------------------------------------------------------------------------------------------------
# the sigmoid map itself
# ---------------------------------------------------------------------------------------------------------------
def direct_sigmoid(z):
    """The textbook formula sigmoid(z_i) / sum_j sigmoid(z_j), in float64 (0/0 where every sigmoid underflows)."""
    p = torch.sigmoid(z.double())
    return p / p.sum(-1, keepdim=True)


def triton_coefficients(z, act):
    """The coefficients the Triton H-LRU kernel computes for logit groups z [G, m+1], read back through the scan.

    One step (T = 1) with G channels and m+1 batch rows: row k < m starts from the unit window e_k with value 0, so
    s_1 = c_k; row m starts from zero with value 1, so s_1 = c_m (the input gate).
    """
    G, m1 = z.shape
    m = m1 - 1
    gates = z.to(TRITON_DEVICE).expand(m1, 1, G, m1).contiguous()
    h0 = torch.zeros(m1, G, m, device=TRITON_DEVICE)
    for k in range(m):
        h0[k, :, k] = 1.0
    values = torch.zeros(m1, 1, G, device=TRITON_DEVICE)
    values[m] = 1.0
    out, _ = hlru_scan(gates, values, h0, act, backend="triton")
    return out[:, 0, :].T.cpu()  # [G, m+1]


def very_negative_groups(m, G=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(G, m + 1, generator=gen) * 3.0
    shift = torch.tensor([-1e4, -200.0, -150.0, -105.0, -1e6, -3e4, -1e4, -200.0] * (G // 8))
    return z + shift[:, None]


@pytest.mark.parametrize("m", [1, 2, 3])
def test_sigmoid_all_very_negative_equals_softmax_torch(m):
    z = very_negative_groups(m)
    assert (torch.sigmoid(z).sum(-1) == 0).any()  # the direct float32 formula would be 0/0 here
    c = normalize_gates(z, "sigmoid")
    assert c.dtype == torch.float32 and torch.isfinite(c).all()
    torch.testing.assert_close(c.double(), torch.softmax(z.double(), -1), rtol=0, atol=1e-6)
    c64 = normalize_gates(z.double(), "sigmoid")
    torch.testing.assert_close(c64, torch.softmax(z.double(), -1), rtol=0, atol=1e-6)


@pytest.mark.skipif(not TRITON_OK, reason="needs Triton (CUDA or interpreter)")
@pytest.mark.parametrize("m", [1, 2, 3])
def test_sigmoid_all_very_negative_equals_softmax_triton(m):
    z = very_negative_groups(m)
    c = triton_coefficients(z, "sigmoid")
    assert torch.isfinite(c).all()
    torch.testing.assert_close(c.double(), torch.softmax(z.double(), -1), rtol=0, atol=1e-6)


@pytest.mark.parametrize("m", [1, 2, 3])
def test_sigmoid_gradient_all_very_negative_matches_float64(m):
    """Gradient of sum(w * c) in float32 (stable form) against float64; at -200 the float64 direct formula is finite
    and gives the same gradient as the stable form."""
    z = very_negative_groups(m)
    w = torch.randn(z.shape, generator=torch.Generator().manual_seed(1))
    z32 = z.clone().requires_grad_()
    (normalize_gates(z32, "sigmoid") * w).sum().backward()
    z64 = z.double().requires_grad_()
    (normalize_gates(z64, "sigmoid") * w.double()).sum().backward()
    assert torch.isfinite(z32.grad).all() and torch.isfinite(z64.grad).all()
    torch.testing.assert_close(z32.grad.double(), z64.grad, rtol=1e-5, atol=1e-6)
    # the limit: as all z -> -inf, sigmoid normalisation -> softmax, and so does its Jacobian
    zs = z.double().requires_grad_()
    (torch.softmax(zs, -1) * w.double()).sum().backward()
    torch.testing.assert_close(z64.grad, zs.grad, rtol=0, atol=1e-6)
    # where the direct float64 formula is finite (rows shifted by -105 .. -200), it has the same gradient
    finite_rows = torch.sigmoid(z.double()).sum(-1) > 0
    assert finite_rows.any()
    zd = z.double()[finite_rows].requires_grad_()
    (direct_sigmoid(zd) * w.double()[finite_rows]).sum().backward()
    torch.testing.assert_close(z64.grad[finite_rows], zd.grad, rtol=1e-9, atol=1e-12)


def analytic_groups(m, G=64, seed=0):
    """Logit groups from ordinary to very wide ranges, each row finite under the float64 direct formula."""
    gen = torch.Generator().manual_seed(seed)
    scale = torch.tensor([0.1, 1.0, 5.0, 30.0, 100.0, 300.0, 700.0, 1e4])[torch.arange(G) % 8]
    shift = torch.tensor([0.0, -50.0, 50.0, -300.0, -700.0, 0.0, 20.0, -5.0])[(torch.arange(G) // 8) % 8]
    return torch.randn(G, m + 1, generator=gen) * scale[:, None] + shift[:, None]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("m", [1, 2, 3])
def test_sigmoid_normalisation_equals_direct_float64_formula_where_finite(backend, m):
    z = analytic_groups(m)
    expected = direct_sigmoid(z)
    # rows where the direct formula is finite and accurate: every sigmoid a normal float64 (no denormal underflow)
    finite = torch.isfinite(expected).all(-1) & (torch.sigmoid(z.double()) > 1e-290).all(-1)
    assert finite.sum() > len(z) // 2
    if backend == "torch":
        got = normalize_gates(z, "sigmoid")
        got64 = normalize_gates(z.double(), "sigmoid")
        torch.testing.assert_close(got64[finite], expected[finite], rtol=1e-12, atol=1e-15)
    else:
        got = triton_coefficients(z, "sigmoid")
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double()[finite], expected[finite], rtol=1e-5, atol=1e-6)
    # everywhere (including the 0/0 rows of the direct formula) the float64 stable form is the reference
    torch.testing.assert_close(got.double(), normalize_gates(z.double(), "sigmoid"), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("act", GATE_ACTIVATIONS)
@pytest.mark.parametrize("m", [1, 2, 3])
def test_ordinary_logits_unchanged(act, m):
    """For ordinary logits every map gives the textbook formula of the spec's table (float32 rounding)."""
    z = torch.randn(32, m + 1, generator=torch.Generator().manual_seed(m)) * 2.0
    formulas = {
        "softmax": lambda x: torch.exp(x) / torch.exp(x).sum(-1, keepdim=True),
        "sigmoid": direct_sigmoid,
        "relu": lambda x: torch.relu(x) / (torch.relu(x) + 1e-3).sum(-1, keepdim=True),
        "tanh": lambda x: torch.tanh(x) / (torch.tanh(x).abs().sum(-1, keepdim=True) + 1e-6),
        "linear": lambda x: x / (x.abs().sum(-1, keepdim=True) + 1e-6),
        "none": lambda x: x,
    }
    expected = formulas[act](z.double())
    torch.testing.assert_close(normalize_gates(z, act).double(), expected, rtol=1e-6, atol=1e-7)
    if TRITON_OK:
        torch.testing.assert_close(triton_coefficients(z, act).double(), expected, rtol=1e-6, atol=1e-6)
