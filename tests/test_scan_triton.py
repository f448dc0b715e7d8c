"""Triton scan kernels against the float64 reference, on CPU through the Triton interpreter.

The interpreter must be switched on before anything imports triton: tests/conftest.py does it.
Tolerances (relative L2 error ||x - ref|| / ||ref|| against the float64 reference run on the same,
already-rounded inputs): float32 inputs 1e-5; float16 5e-3; bfloat16 2e-2 (the outputs are rounded to
the input dtype and the backward reads the saved half-precision states).
"""

import os
import sys
import warnings

import pytest
import torch

pytest.importorskip("triton")
if torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") != "1":
    # Triton reads TRITON_INTERPRET when it is imported; tests/conftest.py sets it on machines without CUDA.
    pytest.skip("interpreter tests need TRITON_INTERPRET=1 before triton is imported (CPU machines)",
                allow_module_level=True)

from hf_lrnn.ops import bdlru_scan, hlru_scan  # noqa: E402
from hf_lrnn.scan_torch import GATE_ACTIVATIONS, bdlru_scan_torch, hlru_scan_torch  # noqa: E402
from hf_lrnn.scan_triton import bdlru_scan_triton, hlru_scan_triton  # noqa: E402

scan_triton = sys.modules["hf_lrnn.scan_triton"]

TOL = {torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 2e-2, torch.float64: 1e-5}


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def run_case(blocked, B, T, N, m, act="softmax", dtype=torch.float32, gdtype=None, chunk=None, h0=True, cu=None,
             scale=1.0, expanded=False, seed=0):
    """Forward, final state and all gradients of the Triton op against the float64 reference."""
    gen = torch.Generator().manual_seed(seed)
    gdtype = gdtype or dtype
    S = B if cu is None else len(cu) - 1
    gshape = (B, T, N, m, m + 1) if blocked else (B, T, N, m + 1)
    vshape = (B, T, N, m) if blocked else (B, T, N)
    if expanded:
        param = (torch.rand(gshape[2:], generator=gen) * scale).to(gdtype).requires_grad_()
        gates = param.expand(gshape)
    else:
        param = (torch.randn(gshape, generator=gen) * scale).to(gdtype).requires_grad_()
        gates = param
    values = torch.randn(vshape, generator=gen).to(dtype).requires_grad_()
    x0 = torch.randn(S, N, m, generator=gen).requires_grad_() if h0 else None
    cut = torch.tensor(cu, dtype=torch.int32) if cu is not None else None
    do = torch.randn(vshape, generator=gen, dtype=torch.float64)
    df = torch.randn(S, N, m, generator=gen, dtype=torch.float64)

    fn = bdlru_scan_triton if blocked else hlru_scan_triton
    out, fin = fn(gates, values, x0, act, True, cut, chunk)
    assert out.dtype == values.dtype and out.shape == vshape
    assert fin.dtype == torch.float32 and fin.shape == (S, N, m)
    inputs = [param, values] + ([x0] if h0 else [])
    grads = torch.autograd.grad((out.double() * do).sum() + (fin.double() * df).sum(), inputs)

    # reference on float64 copies of exactly the same (rounded) inputs
    rp = param.detach().double().requires_grad_()
    rg = rp.expand(gshape) if expanded else rp
    rv = values.detach().double().requires_grad_()
    rx = x0.detach().double().requires_grad_() if h0 else None
    ref = bdlru_scan_torch if blocked else hlru_scan_torch
    rout, rfin = ref(rg, rv, rx, act, cut)
    rgrads = torch.autograd.grad((rout * do).sum() + (rfin * df).sum(), [rp, rv] + ([rx] if h0 else []))

    tol = TOL[dtype] if TOL[gdtype] < TOL[dtype] else TOL[gdtype]
    assert torch.isfinite(out.float()).all()
    assert rel(out, rout) < tol, ("states", rel(out, rout))
    assert rel(fin, rfin) < max(tol, 1e-5), ("final", rel(fin, rfin))
    for name, a, b in zip(("d_gates", "d_values", "d_initial_state"), grads, rgrads):
        assert a.dtype == (param.dtype if name == "d_gates" else values.dtype if name == "d_values" else x0.dtype)
        assert rel(a, b) < 3 * tol, (name, rel(a, b))


@pytest.mark.parametrize("m", [1, 2, 3, 4, 5])
def test_hlru_orders(m):
    run_case(False, 2, 11, 3, m)


@pytest.mark.parametrize("m", [1, 2, 3, 4, 8])
def test_bdlru_blocks(m):
    run_case(True, 2, 7 if m < 8 else 5, 3 if m < 8 else 2, m)


@pytest.mark.parametrize("act", GATE_ACTIVATIONS)
def test_activations_hlru(act):
    run_case(False, 2, 9, 3, 3, act=act, scale=0.5 if act == "none" else 1.0)


@pytest.mark.parametrize("act", GATE_ACTIVATIONS)
def test_activations_bdlru(act):
    run_case(True, 1, 6, 2, 3, act=act, scale=0.5 if act == "none" else 1.0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("blocked", [False, True])
def test_half_inputs(blocked, dtype):
    run_case(blocked, 2, 12, 3, 2, dtype=dtype)


def test_mixed_dtypes():
    run_case(False, 2, 10, 3, 2, dtype=torch.float32, gdtype=torch.bfloat16)
    run_case(True, 1, 8, 2, 2, dtype=torch.bfloat16, gdtype=torch.float32)


def test_float64_inputs_computed_in_float32():
    run_case(False, 1, 8, 3, 2, dtype=torch.float64)


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_hlru_chunked(m):
    # T = 13 is not a multiple of the chunk length 4; chunk shorter than the order m too
    run_case(False, 2, 13, 3, m, chunk=4 if m < 4 else 3)


@pytest.mark.parametrize("m", [1, 2, 3])
def test_bdlru_chunked(m):
    run_case(True, 2, 11, 2, m, chunk=3)


@pytest.mark.parametrize("m", [8, 16])  # one block per thread (loads one step ahead), [m, m] tiles
def test_bdlru_chunked_large_block(m):
    run_case(True, 1, 9, 2, m, chunk=4)


def test_chunked_without_initial_state_bf16():
    run_case(False, 2, 10, 3, 2, dtype=torch.bfloat16, chunk=4, h0=False)


@pytest.mark.parametrize("chunk", [None, 3])
@pytest.mark.parametrize("blocked", [False, True])
def test_varlen(blocked, chunk):
    run_case(blocked, 1, 17, 3, 2 if blocked else 3, cu=[0, 5, 5, 12, 17], chunk=chunk)


def test_varlen_no_initial_state():
    run_case(False, 1, 12, 2, 2, cu=[0, 1, 7, 12], h0=False)


@pytest.mark.parametrize("m", [4, 8])
@pytest.mark.parametrize("layout", ["contiguous", "expanded", "offset", "float32"])
def test_bdlru_word_loads_equal_logit_loads(monkeypatch, m, layout):
    """BD-LRU's per-thread kernels read bf16 logits as 8-byte words where they are whole and aligned (`_words`):
    states, final state and every gradient equal bit for bit those of loading each logit alone (WORD_LOADS off),
    sequential and chunked, and within the bf16 tolerance of the float64 reference. Expanded gates (stride 0 in B and
    T) take words too; a view 2 bytes off an 8-byte boundary and float32 logits take the logit loads."""
    B, T, N = 2, 21, 3
    gen = torch.Generator().manual_seed(m)
    shape = (B, T, N, m, m + 1)
    if layout == "expanded":
        param = (torch.randn(shape[2:], generator=gen) * 2).to(torch.bfloat16).requires_grad_()
        gates = param.expand(shape)
    elif layout == "offset":  # the logits start one element into their storage
        param = (torch.randn(B * T * N * m * (m + 1) + 1, generator=gen) * 2).to(torch.bfloat16).requires_grad_()
        gates = param[1:].view(shape)
    else:
        param = (torch.randn(shape, generator=gen) * 2).to(
            torch.float32 if layout == "float32" else torch.bfloat16).requires_grad_()
        gates = param
    values = torch.randn(B, T, N, m, generator=gen).to(torch.bfloat16).requires_grad_()
    h0 = torch.randn(B, N, m, generator=gen).requires_grad_()
    words = scan_triton._words(dict(gates=gates, M=m, stride_gates_b=gates.stride(0), stride_gates_t=gates.stride(1)))
    assert words is (layout in ("contiguous", "expanded"))
    runs = []
    for word_loads in (True, False):
        monkeypatch.setattr(scan_triton, "WORD_LOADS", word_loads)
        for chunk in (0, 8):
            states, final = bdlru_scan_triton(gates, values, h0, "softmax", True, None, chunk)
            loss = states.double().square().sum() + final.double().sum()
            runs.append((states, final) + torch.autograd.grad(loss, (param, values, h0)))
    for with_words, alone in zip(runs[:2], runs[2:]):
        for a, b in zip(with_words, alone):
            assert torch.equal(a, b)
    reference = bdlru_scan_torch(gates.detach().double(), values.detach().double(), h0.detach().double(), "softmax")
    assert rel(runs[0][0], reference[0]) < TOL[torch.bfloat16]
    assert rel(runs[0][1], reference[1]) < TOL[torch.bfloat16]


@pytest.mark.parametrize("blocked", [False, True])
def test_expanded_gates(blocked):
    # a learned [N, m+1] parameter expanded to [B, T, N, m+1] (stride 0 in B and T)
    run_case(blocked, 2, 9, 3, 2, expanded=True)


def test_channel_tiles_tail(monkeypatch):
    # several channel tiles per program grid, the last one partial (N=5 with 2-unit tiles)
    monkeypatch.setattr(scan_triton, "_block", lambda m, nvp, N: 2)
    monkeypatch.setattr(scan_triton, "_bdlru_tile_launch", lambda phase, programs, device: (2, 1))
    monkeypatch.setattr(scan_triton, "BLOCK_PER_THREAD_BLOCKS", 2)
    run_case(False, 2, 9, 5, 3)
    run_case(True, 1, 7, 5, 2, chunk=3)
    run_case(True, 2, 7, 5, 3)  # block per thread
    run_case(True, 2, 7, 5, 4, chunk=3)
    run_case(True, 2, 7, 5, 8, chunk=3)  # block per thread, loads one step ahead
    run_case(True, 2, 7, 5, 16, chunk=3)  # [m, m] tiles


@pytest.mark.parametrize("precision", [None, "ieee"])
@pytest.mark.parametrize("m", [12, 16])
def test_bdlru_tile_aggregates_by_dot_or_broadcast(monkeypatch, m, precision):
    """The [m, m] tile kernels' aggregate phase multiplies its carried vectors by each step's tile with tl.dot
    (`_AGGREGATE_DOT_PRECISION`) or as a broadcast product (None): the chunked mode against the float64 reference,
    with the aggregate launches taking the path asked for."""
    monkeypatch.setattr(scan_triton, "_AGGREGATE_DOT_PRECISION", precision)
    launches = []
    launch = scan_triton._launch
    monkeypatch.setattr(scan_triton, "_launch", lambda *args: launches.append(launch(*args)) or launches[-1])
    run_case(True, 2, 9, 2, m, chunk=4)
    aggregate_paths = [keywords["DOT"] for _, _, keywords in launches if keywords["NVP"] > 1]
    assert len(aggregate_paths) == 2 and set(aggregate_paths) == {precision is not None}  # forward and backward


def test_bdlru_tile_launch_rule():
    """The BD-LRU tile kernels run one block per program; the aggregate phase in 2 warps; the main phase in 1, 2 or
    4 warps, as many as keep the warps per SM within TILE_WARPS_PER_SM (or 1): 4 at B8 T4096 D1024 of m = 16 (512
    programs on 132 SMs), 1 at B32 T2048 D2048 (4096)."""
    sms, most = scan_triton._num_sms("cpu"), scan_triton.TILE_WARPS_PER_SM
    assert scan_triton._bdlru_tile_launch("agg", 10**6, "cpu") == (1, 2)
    for programs in (1, 64, 512, 600, 1024, 2112, 4096, 10**6):
        block, warps = scan_triton._bdlru_tile_launch("main", programs, "cpu")
        assert block == 1 and warps in (1, 2, 4)
        assert warps == 1 or programs * warps / sms <= most  # no more warps than the SMs' share
        assert warps == 4 or programs * 2 * warps / sms > most  # twice as many would be more
    assert scan_triton._bdlru_tile_launch("main", 512, "cpu")[1] == 4
    assert scan_triton._bdlru_tile_launch("main", 4096, "cpu")[1] == 1


def test_tile_chunk_policy():
    """BD-LRU m = 16 (the tile kernels), as measured on the H200: sequential where the rows fill the GPU (B8 T4096
    D1024, B32 T2048 D2048), chunked at B1 T16384 D1024."""
    sms = 132
    assert scan_triton._auto_chunk(8, 64, 16, True, 4096, sms) == 0
    assert scan_triton._auto_chunk(32, 128, 16, True, 2048, sms) == 0
    assert scan_triton._auto_chunk(1, 64, 16, True, 16384, sms) == scan_triton._chunk_length(16384) > 0


def test_block_per_thread_chunk_policy():
    # BD-LRU m <= 4: chunks just long enough that the phase's S x N x (T / chunk) threads give every SM its share
    sms, share = 132, scan_triton.THREADS_PER_SM
    assert scan_triton._auto_chunk(1024, 256, 4, True, 2048, sms) == 0  # the rows alone fill the GPU: sequential
    for S, N, T in [(8, 192, 2048), (1, 256, 16384), (32, 512, 2048), (8, 256, 4096)]:
        chunk = scan_triton._auto_chunk(S, N, 4, True, T, sms)
        shortest = scan_triton._chunk_length(T)
        assert chunk > 0 and chunk & (chunk - 1) == 0 and chunk >= shortest
        assert S * N * T / chunk >= sms * share or chunk == shortest
        assert S * N * T / (2 * chunk) < sms * share  # twice as long would leave SMs short
    assert scan_triton._auto_chunk(8, 192, 4, True, 32, sms) == 0  # too short to split
    assert scan_triton._auto_chunk(8, 192, 2, True, 2048, sms) == scan_triton._auto_chunk(8, 192, 4, True, 2048, sms)
    # BD-LRU m = 8: registers leave a quarter of the threads resident, so the chunks are up to 4x longer
    for S, N, T in [(16, 256, 2048), (32, 256, 2048), (8, 128, 4096), (1, 128, 16384), (8, 96, 2048)]:
        chunk = scan_triton._auto_chunk(S, N, 8, True, T, sms)
        share = scan_triton._resident_threads_per_sm(True, 8)
        assert share == scan_triton.THREADS_PER_SM // 4 == scan_triton._resident_threads_per_sm(True, 4) // 4
        assert chunk >= scan_triton._auto_chunk(S, N, 4, True, T, sms)
        assert S * N * T / chunk >= sms * share or chunk == scan_triton._chunk_length(T)
        assert S * N * T / (2 * chunk) < sms * share
    assert scan_triton._resident_threads_per_sm(False, 8) == scan_triton.THREADS_PER_SM  # H-LRU: m + 1 logits


@pytest.mark.parametrize("blocked", [False, True])
def test_decode_single_step(blocked):
    B, N, m = 3, 4, 3
    gshape = (B, 1, N, m, m + 1) if blocked else (B, 1, N, m + 1)
    vshape = (B, 1, N, m) if blocked else (B, 1, N)
    g, v, h0 = torch.randn(gshape), torch.randn(vshape), torch.randn(B, N, m)
    fn, ref = (bdlru_scan_triton, bdlru_scan_torch) if blocked else (hlru_scan_triton, hlru_scan_torch)
    with torch.no_grad():
        out, fin = fn(g, v, h0, "softmax", True, None)
    rout, rfin = ref(g.double(), v.double(), h0.double(), "softmax")
    assert rel(out, rout) < 1e-6 and rel(fin, rfin) < 1e-6
    run_case(blocked, 2, 1, 3, m)  # and with gradients


def test_ops_dispatch_triton_matches_torch():
    g, v = torch.randn(2, 8, 3, 3), torch.randn(2, 8, 3)
    a, fa = hlru_scan(g, v, output_final_state=True, backend="triton")
    b, fb = hlru_scan(g, v, output_final_state=True, backend="torch")
    assert rel(a, b) < 1e-5 and rel(fa, fb) < 1e-5
    g, v = torch.randn(1, 6, 2, 2, 3), torch.randn(1, 6, 2, 2)
    a, _ = bdlru_scan(g, v, backend="triton")
    b, _ = bdlru_scan(g, v, backend="torch")
    assert rel(a, b) < 1e-5


def test_stability_bound_softmax():
    # Proposition 1: with the L1 maps every state is a convex-type combination, |h_t| <= max |v|
    g, v = torch.randn(2, 40, 4, 3, 4) * 3, torch.randn(2, 40, 4, 3)
    out, _ = bdlru_scan_triton(g, v, None, "softmax", False, None, 8)
    assert torch.isfinite(out).all() and out.abs().max() <= v.abs().max() * (1 + 1e-6)
    g, v = torch.randn(2, 40, 4, 5) * 3, torch.randn(2, 40, 4)
    out, _ = hlru_scan_triton(g, v, None, "tanh", False, None, 0)
    assert torch.isfinite(out).all() and out.abs().max() <= v.abs().max() * (1 + 1e-6)


def test_large_order_warns_and_is_correct():
    scan_triton._WARNED.clear()
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        run_case(False, 1, 5, 2, 9)
    assert any("tuned range" in str(w.message) for w in rec)


def test_no_grad_outputs_only_final():
    # only the final state receives a gradient
    g = torch.randn(1, 6, 2, 3, requires_grad=True)
    v = torch.randn(1, 6, 2, requires_grad=True)
    _, fin = hlru_scan_triton(g, v, None, "softmax", True, None)
    fin.sum().backward()
    rg = g.detach().double().requires_grad_()
    rv = v.detach().double().requires_grad_()
    _, rfin = hlru_scan_torch(rg, rv)
    rfin.sum().backward()
    assert rel(g.grad, rg.grad) < 1e-5 and rel(v.grad, rv.grad) < 1e-5


# m = 1 (the diagonal case shared by both ops): longer sequences, every activation, chunks, varlen.
@pytest.mark.parametrize("act", GATE_ACTIVATIONS)
@pytest.mark.parametrize("blocked", [False, True])
def test_diagonal_kernel_multi_tile(blocked, act):
    run_case(blocked, 2, 37, 5, 1, act=act, scale=0.5 if act == "none" else 1.0)


@pytest.mark.parametrize("chunk", [16, 20])
def test_diagonal_kernel_chunked_varlen_expanded(chunk):
    run_case(False, 2, 45, 3, 1, chunk=chunk)
    run_case(True, 1, 50, 3, 1, cu=[0, 17, 17, 50], chunk=chunk)
    run_case(False, 1, 50, 3, 1, cu=[0, 33, 50], h0=False)
    run_case(False, 2, 33, 3, 1, expanded=True, dtype=torch.bfloat16, chunk=chunk)


# Device placement: every kernel launch happens inside torch.cuda.device(<device of the inputs>) (no-op on CPU).
def test_device_guard_selects_the_tensors_cuda_device(monkeypatch):
    entered = []

    class FakeCudaDevice:
        def __init__(self, device):
            self.device = device

        def __enter__(self):
            entered.append(self.device)

        def __exit__(self, *exc):
            entered.append("exit")

    monkeypatch.setattr(torch.cuda, "device", FakeCudaDevice)
    with scan_triton._device_guard(torch.device("cuda", 1)):
        assert entered == [torch.device("cuda", 1)]
    assert entered == [torch.device("cuda", 1), "exit"]
    entered.clear()
    with scan_triton._device_guard(torch.device("cpu")):  # CPU (the interpreter): no CUDA context is touched
        pass
    assert entered == []


@pytest.mark.parametrize("m,chunk", [(2, 0), (2, 3), (1, None)])  # sequential, chunked, first-order look-back
@pytest.mark.parametrize("blocked", [False, True])
def test_every_launch_is_inside_the_device_guard(monkeypatch, blocked, m, chunk):
    guard_devices, launches, active = [], [], []
    real_guard = scan_triton._device_guard

    class RecordingGuard:
        def __init__(self, device):
            self.device = torch.device(device)
            self.inner = real_guard(device)

        def __enter__(self):
            guard_devices.append(self.device)
            active.append(self.device)
            return self.inner.__enter__()

        def __exit__(self, *exc):
            active.pop()
            return self.inner.__exit__(*exc)

    class CheckedKernel:
        def __init__(self, name, kernel):
            self.name, self.kernel = name, kernel

        def __getitem__(self, grid):
            launch = self.kernel[grid]

            def checked(*args, **kwargs):
                assert active, f"{self.name} launched outside the device guard"
                launches.append((self.name, active[-1]))
                return launch(*args, **kwargs)

            return checked

    monkeypatch.setattr(scan_triton, "_device_guard", RecordingGuard)
    for name in ("_hlru_fwd_kernel", "_hlru_bwd_kernel", "_bdlru_fwd_kernel", "_bdlru_bwd_kernel", "_carry_kernel",
                 "_bdlru_fwd_block_per_thread_kernel", "_bdlru_bwd_block_per_thread_kernel",
                 "_hlru_fwd_channel_per_thread_kernel", "_hlru_bwd_channel_per_thread_kernel",
                 "_first_order_fwd_kernel", "_first_order_bwd_kernel"):
        monkeypatch.setattr(scan_triton, name, CheckedKernel(name, getattr(scan_triton, name)))

    N, T = 3, 7
    gshape = (2, T, N, m, m + 1) if blocked else (2, T, N, m + 1)
    vshape = (2, T, N, m) if blocked else (2, T, N)
    g = torch.randn(gshape, requires_grad=True)
    v = torch.randn(vshape, requires_grad=True)
    h0 = torch.randn(2, N, m, requires_grad=True)
    fn = bdlru_scan_triton if blocked else hlru_scan_triton
    out, fin = fn(g, v, h0, "sigmoid", True, None, chunk)
    n_fwd = len(launches)
    assert n_fwd >= 1 and all("fwd" in name or name == "_carry_kernel" for name, _ in launches)
    (out.sum() + fin.sum()).backward()
    assert len(launches) > n_fwd and all("bwd" in name or name == "_carry_kernel" for name, _ in launches[n_fwd:])
    assert g.grad is not None and v.grad is not None and h0.grad is not None
    with torch.no_grad():  # inference path (no autograd Function)
        fn(g, v, h0, "softmax", True, None, chunk)
    assert len(guard_devices) == 3 and all(d == v.device for d in guard_devices)
    assert all(d == v.device for _, d in launches)
    if chunk:
        assert any(name == "_carry_kernel" for name, _ in launches)


# --------------------------------------------------------------------------- first order: single-pass look-back
# m = 1 with the automatic policy (chunk_size=None) runs the look-back kernels: chunks of 16 steps x 16 channels
# under the interpreter, so these shapes span several chunks and channel blocks.


@pytest.mark.parametrize("blocked", [False, True])
def test_first_order_uses_the_look_back_kernels(blocked):
    assert scan_triton._make_plan(2, 40, 8, 1, blocked, None, None, "cpu").first_order
    assert not scan_triton._make_plan(2, 40, 8, 1, blocked, None, 0, "cpu").first_order  # forced: the old kernels
    assert not scan_triton._make_plan(2, 40, 8, 2, blocked, None, None, "cpu").first_order
    # one step (decode) runs in one launch of the sequential kernel; a packed batch of one step still looks back
    assert not scan_triton._make_plan(2, 1, 8, 1, blocked, None, None, "cpu").first_order
    assert scan_triton._make_plan(1, 1, 8, 1, blocked, torch.tensor([0, 1]), None, "cpu").first_order
    run_case(blocked, 3, 1, 37, 1)  # and equals the reference
    torch.use_deterministic_algorithms(True)  # the look-back may round differently between runs: not then
    try:
        assert not scan_triton._make_plan(2, 40, 8, 1, blocked, None, None, "cpu").first_order
    finally:
        torch.use_deterministic_algorithms(False)


@pytest.mark.parametrize("act", GATE_ACTIVATIONS)
@pytest.mark.parametrize("blocked", [False, True])
def test_first_order_look_back(blocked, act):
    run_case(blocked, 3, 70, 37, 1, act=act)  # 5 chunks (the last partial) x 3 channel blocks (the last partial)


@pytest.mark.parametrize("prefix_every", [2, 3, 100])
@pytest.mark.parametrize("blocked", [False, True])
def test_first_order_look_back_composes_aggregates(monkeypatch, blocked, prefix_every):
    """Chunks that publish only their aggregate: a look-back composes several maps before it reaches a prefix (100:
    only the first chunk publishes one, so the last chunk composes all the others)."""
    monkeypatch.setattr(scan_triton, "_PREFIX_EVERY", prefix_every)
    run_case(blocked, 2, 100, 20, 1, act="sigmoid")
    run_case(blocked, 1, 75, 16, 1, cu=[0, 5, 5, 40, 75])


@pytest.mark.parametrize("blocked", [False, True])
def test_first_order_expanded_gates(blocked, monkeypatch):
    """A learned gate parameter expanded over batch and time (stride 0) is read in place, not copied."""
    copies = []
    real_contiguous = torch.Tensor.contiguous
    monkeypatch.setattr(torch.Tensor, "contiguous", lambda self, *a, **k: copies.append(self.shape) or
                        real_contiguous(self, *a, **k))
    run_case(blocked, 2, 40, 18, 1, expanded=True)
    gate_shape = (2, 40, 18, 1, 2) if blocked else (2, 40, 18, 2)
    assert all(tuple(shape) not in (gate_shape, (2, 40, 36)) for shape in copies)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_first_order_dtypes(dtype):
    run_case(False, 2, 40, 18, 1, dtype=dtype, h0=False)


@pytest.mark.parametrize("cu", [[0, 5, 5, 40, 75], [0, 16, 32, 33, 64], [0, 75], [0, 0, 0]])
@pytest.mark.parametrize("h0", [True, False])
def test_first_order_varlen(cu, h0):
    """Packed sequences that start inside, at the edge of, or exactly at a chunk; empty ones keep their state."""
    run_case(False, 1, cu[-1], 20, 1, cu=cu, h0=h0)


@pytest.mark.parametrize("T", [0, 1, 16, 17])
def test_first_order_short_and_empty(T):
    if T == 0:
        h0 = torch.randn(2, 4, 1)
        out, fin = hlru_scan_triton(torch.randn(2, 0, 4, 2), torch.randn(2, 0, 4), h0, "softmax", True)
        assert out.shape == (2, 0, 4) and torch.equal(fin, h0)  # no step: the state is the initial state
        return
    run_case(False, 2, T, 5, 1)


NAN_CASE = """
import sys, torch
from hf_lrnn import scan_triton
from hf_lrnn.scan_torch import hlru_scan_torch
scan_triton._PREFIX_EVERY = int(sys.argv[1])
all_ones_nan = torch.tensor(-1, dtype=torch.int32).view(torch.float32)
assert torch.isnan(all_ones_nan)
gates, values = torch.randn(1, 64, 5, 2), torch.randn(1, 64, 5)
values[0, 3, 1] = all_ones_nan  # chunk 0 of 4 (16 steps each), channel 1
out, fin = scan_triton.hlru_scan_triton(gates, values, None, "softmax", True)
ref, _ = hlru_scan_torch(gates.double(), values.double())
assert torch.isnan(out[0, 3:, 1]).all() and torch.isnan(fin[0, 1]).all()  # through every later chunk
keep = ~torch.isnan(ref)
assert torch.equal(torch.isnan(out), ~keep)
assert ((out[keep].double() - ref[keep]).norm() / ref[keep].norm()).item() < 1e-5
print("ok")
"""


@pytest.mark.parametrize("prefix_every", [1, 3])
def test_first_order_look_back_publishes_nan_as_a_value(prefix_every):
    """The forward's look-back words start as all bits set (a NaN) and mean "not published yet". A NaN input whose
    bits are exactly that pattern propagates to the chunk maps and prefixes; it must be published as a NaN value
    (canonical bits), not be taken for "not yet", which would make the next chunk wait forever: run in a child
    process so that such a hang fails the test instead of stopping the suite."""
    import subprocess

    env = dict(os.environ, TRITON_INTERPRET="1")
    try:
        done = subprocess.run([sys.executable, "-c", NAN_CASE, str(prefix_every)], env=env, capture_output=True,
                              text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("the look-back waited forever on a chunk whose published word was a NaN with all bits set")
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]


@pytest.mark.parametrize("blocked,m", [(False, 1), (False, 2), (False, 8), (True, 1), (True, 2), (True, 4),
                                     (True, 8)])
def test_scan_step_into_writes_the_state_in_place(blocked, m):
    """A decode step that updates the cache's state tensor itself: the same states and final state as the scan (the
    same kernel), the state's address kept, and the float64 reference met."""
    from hf_lrnn.ops import scan_step_into

    gen = torch.Generator().manual_seed(m)
    B, N = 3, 5
    gates = torch.randn((B, 1, N, m, m + 1) if blocked else (B, 1, N, m + 1), generator=gen)
    values = torch.randn((B, 1, N, m) if blocked else (B, 1, N), generator=gen)
    state = torch.randn(B, N, m, generator=gen)
    before = state.clone()
    fn = bdlru_scan_triton if blocked else hlru_scan_triton
    expected_states, expected_final = fn(gates, values, before, "softmax", True)
    address = state.data_ptr()
    states = scan_step_into(blocked, gates, values, state, "softmax", "triton")
    assert states is not None and state.data_ptr() == address
    assert torch.equal(states, expected_states) and torch.equal(state, expected_final)
    ref_states, ref_final = (bdlru_scan_torch if blocked else hlru_scan_torch)(
        gates.double(), values.double(), before.double(), "softmax")
    assert rel(states, ref_states) < TOL[torch.float32] and rel(state, ref_final) < TOL[torch.float32]
    if not blocked:  # H-LRU: the window, once more, in the read-out (float32 here: the interpreter rounds bfloat16
        # its own way; the GPU tests check bfloat16)
        state.copy_(before)
        readout = torch.full((B, 1, N * m), float("nan"))
        again = scan_step_into(blocked, gates, values, state, "softmax", "triton", readout=readout)
        assert torch.equal(again, states) and torch.equal(state, expected_final)
        assert torch.equal(readout, expected_final.reshape(B, 1, N * m))


def test_scan_step_into_declines_what_it_cannot_do_in_place():
    """None, with the state untouched, wherever the step cannot write the state in place: a tile kernel (BD-LRU m = 16),
    more than one step, autograd, a state that is not a contiguous float32 [B, N, m], the reference backend."""
    from hf_lrnn.ops import scan_step_into

    def case(blocked=False, m=2, T=1, grad=False, state=None, backend="triton"):
        gates = torch.randn((2, T, 3, m, m + 1) if blocked else (2, T, 3, m + 1), requires_grad=grad)
        values = torch.randn((2, T, 3, m) if blocked else (2, T, 3))
        state = torch.randn(2, 3, m) if state is None else state
        kept = state.detach().clone()
        assert scan_step_into(blocked, gates, values, state, "softmax", backend) is None
        assert torch.equal(state.detach(), kept)

    case(blocked=True, m=16)
    for readout, blocked in ((torch.empty(2, 1, 5), False), (torch.empty(6, 2).t(), False), ([0.0] * 6, False),
                             (torch.empty(2, 3, 2), True)):
        gates = torch.randn((2, 1, 3, 2, 3) if blocked else (2, 1, 3, 3))
        values, state = torch.randn((2, 1, 3, 2) if blocked else (2, 1, 3)), torch.randn(2, 3, 2)
        with pytest.raises(ValueError, match="scan_step_into: readout must be None for BD-LRU, or for H-LRU"):
            scan_step_into(blocked, gates, values, state, "softmax", "triton", readout=readout)
    case(T=2)
    case(grad=True)
    case(state=torch.randn(2, 3, 2, requires_grad=True))
    case(state=torch.randn(2, 2, 3).transpose(1, 2))  # not contiguous
    case(state=torch.randn(2, 3, 2, dtype=torch.float64))
    case(backend="torch")
    with torch.no_grad():  # inputs that require grad are fine without autograd
        gates = torch.randn(2, 1, 3, 3, requires_grad=True)
        assert scan_step_into(False, gates, torch.randn(2, 1, 3), torch.randn(2, 3, 2), "softmax", "triton") is not None
