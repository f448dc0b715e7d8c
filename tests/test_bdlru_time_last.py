"""BD-LRU of block size 1, 2 and 4 on time-last tensors (`bdlru_scan_time_last`, scan_time_last.py's block kernels):
the Triton kernels (the interpreter on CPU, the GPU where there is one) against the reference in float64, the
reference against a direct loop over the steps."""
import os

import pytest
import torch

from hf_lrnn import bdlru_scan_time_last, hlru_scan_time_last, scan_time_last
from hf_lrnn.scan_torch import GATE_ACTIVATIONS

GPU = torch.cuda.is_available()
DEVICE = "cuda" if GPU else "cpu"
TRITON_OK = scan_time_last.triton is not None and (GPU or os.environ.get("TRITON_INTERPRET") == "1")
needs_triton = pytest.mark.skipif(not TRITON_OK, reason="needs CUDA or TRITON_INTERPRET=1")


def _inputs(B, N, T, m=2, dtype=torch.float64, with_h0=True, seed=0):
    generator = torch.Generator().manual_seed(seed)
    gates = (torch.randn(B, N, m, m + 1, T, generator=generator, dtype=torch.float64) * 2).to(DEVICE, dtype)
    values = torch.randn(B, N, m, T, generator=generator, dtype=torch.float64).to(DEVICE, dtype)
    h0 = torch.randn(B, N, m, generator=generator, dtype=torch.float64).to(DEVICE, dtype) if with_h0 else None
    return [t.requires_grad_() if t is not None else None for t in (gates, values, h0)]


def _run(backend, gates, values, h0, activation, want_final):
    """States, final state and the gradients of a loss that weighs every step and state entry differently (and the
    final state)."""
    states, final = bdlru_scan_time_last(gates, values, h0, activation, want_final, backend=backend)
    B, N, m, T = values.shape
    weights = torch.linspace(-1.0, 1.0, m * T, dtype=torch.float64, device=values.device).reshape(m, T)
    loss = (states.double() * weights).sum() + (0.7 * final.double().sum() if want_final else 0.0)
    wrt = [t for t in (gates, values, h0) if t is not None]
    return (states, final) + torch.autograd.grad(loss, wrt)


@pytest.mark.parametrize("m", [2, 4])
def test_the_reference_in_time_last_layout_is_the_direct_loop(m):
    """h_t = A_t h_{t-1} + g_t * v_t per block, in float64, step by step from the spec's formula."""
    gates, values, h0 = (t.detach() for t in _inputs(2, 3, 9, m=m))
    states, final = bdlru_scan_time_last(gates, values, h0, "softmax", True, backend="torch")
    coefficients = torch.softmax(gates, dim=3)  # [B, N, m, m+1, T]: each row normalised over its m+1 logits
    h = h0.clone()
    for t in range(values.shape[-1]):
        A, g = coefficients[:, :, :, :m, t], coefficients[:, :, :, m, t]
        h = torch.einsum("bnjk,bnk->bnj", A, h) + g * values[..., t]
        torch.testing.assert_close(states[..., t], h, rtol=0, atol=1e-12)
    torch.testing.assert_close(final, h, rtol=0, atol=1e-12)


@pytest.fixture(params=["2-in-threads", "2-segments-2", "2-segments-8", "2-tile-scan", "4", "4-segments-2",
                        "4-segments-4"])
def block_size(request, monkeypatch):
    """The block sizes with time-last kernels, on every path of `_grid` (`blocked`): 2 composed in threads (grids that
    are not small; the forward with the register prefetch of large grids), on small grids (pipelined forwards) in
    segments of a row (2 or 8 runs a tile, a warp each, forward and backward) or as a tile scan (BD2_SEGMENTS off);
    4 composed in threads, one row a program (BD4_SEGMENTS off) or in segments of a row (2 or 4 runs; the forward and
    the adjoint scan)."""
    if request.param.startswith("4"):
        segments = int(request.param.split("-")[-1]) if "segments" in request.param else 1
        monkeypatch.setattr(scan_time_last, "BD4_SEGMENTS", segments > 1)
        monkeypatch.setattr(scan_time_last, "M2_SEGMENTS", segments if segments > 1 else None)
        for backward in (False, True):
            options = scan_time_last._grid(1, 1, 16, DEVICE, backward=backward, order=4, blocked=True)[1]
            assert options["SEGMENTS"] == segments and (segments == 1 or options["BC"] == 1)
        return 4
    in_threads = request.param == "2-in-threads"
    segments = int(request.param.split("-")[-1]) if "segments" in request.param else 1
    monkeypatch.setattr(scan_time_last, "BD2_SMALL_GRID_BELOW", 0 if in_threads else 10**9)
    # in threads with the register prefetch of large grids, the others with the pipelined loop of small ones
    monkeypatch.setattr(scan_time_last, "BD2_REGISTER_PREFETCH_FROM", 0 if in_threads else 10**9)
    monkeypatch.setattr(scan_time_last, "BD2_SEGMENTS", segments > 1)
    monkeypatch.setattr(scan_time_last, "M2_SEGMENTS", segments if segments > 1 else None)
    for backward in (False, True):
        options = scan_time_last._grid(1, 1, 16, DEVICE, backward=backward, order=2, blocked=True)[1]
        assert options["IN_THREADS"] is (in_threads or segments > 1) and options["SEGMENTS"] == segments
        assert backward or options["PREFETCH"] is in_threads
    return 2


@needs_triton
@pytest.mark.parametrize("activation", [a for a in GATE_ACTIVATIONS if a != "none"])
@pytest.mark.parametrize("B,N,T,with_h0,want_final", [(2, 3, 37, True, True), (1, 2, 16, False, True),
                                                       (2, 3, 1, True, False), (1, 1, 50, True, True)])
def test_triton_matches_the_float64_reference(activation, B, N, T, with_h0, want_final, block_size):
    """States, final state and every gradient (gates, values, initial state) against the reference: one tile and a
    partial one (the interpreter's 16-step tiles), a single step, no initial state; on every path."""
    inputs = _inputs(B, N, T, m=block_size, with_h0=with_h0, seed=T + B)
    want = _run("torch", *inputs, activation, want_final)
    got = _run("triton", *inputs, activation, want_final)
    assert len(got) == len(want) == 4 + with_h0
    for g, w in zip(got, want):
        if w is None:
            assert g is None
            continue
        scale = w.abs().max().clamp(min=1.0)
        torch.testing.assert_close(g.to(w.dtype) / scale, w / scale, rtol=0, atol=2e-6)


def _starts(B, T, seed):
    """Document starts [B, T]: random, plus one at step 0 of row 0 and two in a row (a one-step document)."""
    starts = torch.rand(B, T, generator=torch.Generator().manual_seed(seed)) < 0.1
    starts[0, 0] = True
    if T > 6:
        starts[-1, 4:6] = True
    return starts.to(DEVICE)


def test_the_reference_with_document_starts_scans_each_document_alone():
    """With document starts, each document's states are those of a scan of that document alone from a zero state
    (the first document from the initial state), in float64."""
    gates, values, h0 = (t.detach() for t in _inputs(1, 2, 30))
    starts = torch.zeros(1, 30, dtype=torch.bool, device=DEVICE)
    starts[0, [9, 10, 21]] = True
    states, _ = bdlru_scan_time_last(gates, values, h0, "softmax", backend="torch", document_starts=starts)
    for begin, end, initial in ((0, 9, h0), (9, 10, None), (10, 21, None), (21, 30, None)):
        alone, _ = bdlru_scan_time_last(gates[..., begin:end], values[..., begin:end], initial, "softmax",
                                        backend="torch")
        torch.testing.assert_close(states[..., begin:end], alone, rtol=0, atol=1e-12)


@needs_triton
@pytest.mark.parametrize("activation", ["softmax", "tanh"])
@pytest.mark.parametrize("B,N,T,with_h0", [(2, 3, 37, True), (1, 2, 16, False), (2, 1, 3, True)])
def test_document_starts_and_gate_bias_match_the_float64_reference(activation, B, N, T, with_h0, block_size):
    """Packed documents and a logit bias inside the kernels: states, final state and every gradient (the bias's
    included) against the reference; on every path."""
    m = block_size
    gates, values, h0 = _inputs(B, N, T, m=m, with_h0=with_h0, seed=7 * T + B)
    bias = torch.randn(N, m, m + 1, dtype=torch.float64, generator=torch.Generator().manual_seed(T)).to(DEVICE)
    bias.requires_grad_()
    starts = _starts(B, T, seed=T)
    weights = torch.linspace(-1.0, 1.0, m * T, dtype=torch.float64, device=DEVICE).reshape(m, T)
    wrt = [t for t in (gates, values, h0, bias) if t is not None]
    results = []
    for backend in ("torch", "triton"):
        states, final = bdlru_scan_time_last(gates, values, h0, activation, True, backend=backend,
                                             document_starts=starts, gate_bias=bias)
        loss = (states * weights).sum() + 0.7 * final.sum()
        results.append((states, final) + torch.autograd.grad(loss, wrt))
    for got, want in zip(results[1], results[0]):
        scale = want.abs().max().clamp(min=1.0)
        torch.testing.assert_close(got.to(want.dtype) / scale, want / scale, rtol=0, atol=2e-6)


@needs_triton
def test_block_size_1_is_hlru_of_order_1():
    """m = 1 runs `hlru_scan_time_last` on the same numbers: states, final state and gradients equal."""
    gates, values, h0 = _inputs(2, 3, 30, m=1)
    states, final = bdlru_scan_time_last(gates, values, h0, "softmax", True, backend="triton")
    h_states, h_final = hlru_scan_time_last(gates.reshape(2, 3, 2, 30), values.reshape(2, 3, 30), h0, "softmax", True,
                                            backend="triton")
    assert states.shape == (2, 3, 1, 30)
    torch.testing.assert_close(states.reshape(2, 3, 30), h_states, rtol=0, atol=0)
    torch.testing.assert_close(final, h_final, rtol=0, atol=0)
    grads = torch.autograd.grad(states.sin().sum() + final.sum(), (gates, values, h0))
    h_grads = torch.autograd.grad(h_states.sin().sum() + h_final.sum(), (gates, values, h0))
    for got, want in zip(grads, h_grads):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@needs_triton
@pytest.mark.parametrize("m", [2, 4])
def test_gradients_of_only_some_inputs_and_of_the_final_state_alone(m):
    """Values without gradient, a loss on the final state only (d states is None in the backward), and no
    gradient wanted at all (the forward kernel alone, no graph)."""
    gates, values, h0 = _inputs(2, 2, 21, m=m)
    values = values.detach()
    for backend in ("torch", "triton"):
        _, final = bdlru_scan_time_last(gates, values, h0, "softmax", True, backend=backend)
        grads = torch.autograd.grad(final.sum(), (gates, h0))
        if backend == "torch":
            want = grads
    for got, w in zip(grads, want):
        torch.testing.assert_close(got, w, rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        states, _ = bdlru_scan_time_last(gates, values, h0, backend="triton")
    assert states.grad_fn is None and not states.requires_grad


@needs_triton
@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs_give_their_dtype_and_gradients_close_to_float32(m, dtype):
    """bfloat16 and float16 (block size 4 keeps its adjoints in the value gradients' buffer in bfloat16, in a
    float32 one in float16)."""
    gates, values, h0 = _inputs(2, 4, 40, m=m, dtype=dtype)
    states, final, d_gates, d_values, d_h0 = _run("triton", gates, values, h0, "softmax", True)
    assert states.dtype == d_values.dtype == d_gates.dtype == d_h0.dtype == dtype
    assert final.dtype == torch.float32
    reference = _run("torch", *[t.detach().float().requires_grad_() for t in (gates, values, h0)], "softmax", True)
    for got, want in zip((states, final, d_gates, d_values, d_h0), reference):
        torch.testing.assert_close(got.float(), want.float(), rtol=2e-2, atol=2e-2)


@needs_triton
@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("B,T", [(0, 8), (2, 0)])
def test_empty_batches_and_sequences(B, T, m):
    """B = 0 or T = 0: empty states; the final state is the initial one, its gradient passes straight through."""
    gates, values, h0 = _inputs(B, 3, T, m=m)
    states, final = bdlru_scan_time_last(gates, values, h0, "softmax", True, backend="triton")
    assert states.shape == (B, 3, m, T)
    torch.testing.assert_close(final.double(), h0.detach() if T == 0 else torch.zeros_like(h0))
    if B:
        d_h0, = torch.autograd.grad(final.sum(), (h0,))
        torch.testing.assert_close(d_h0, torch.ones_like(h0))


def test_bad_inputs_name_the_argument():
    gates, values, h0 = (t.detach() for t in _inputs(2, 3, 8))
    with pytest.raises(ValueError, match=r"gates must have shape \[B, N, m, m\+1, T\] with m = 1, 2 or 4"):
        bdlru_scan_time_last(torch.zeros(2, 3, 3, 4, 8, dtype=torch.float64, device=DEVICE), values)
    with pytest.raises(ValueError, match=r"gates must have shape \[B, N, m, m\+1, T\]"):
        bdlru_scan_time_last(gates[:, :, :, :2], values)
    with pytest.raises(ValueError, match=r"values must have shape \[B, N, m, T\] = \(2, 3, 2, 8\)"):
        bdlru_scan_time_last(gates, values[..., :7])
    with pytest.raises(ValueError, match=r"initial_state must be None or a floating tensor \[B, N, m\] = \(2, 3, 2\)"):
        bdlru_scan_time_last(gates, values, h0[:, :2])
    with pytest.raises(ValueError, match="gate_activation must be one of"):
        bdlru_scan_time_last(gates, values, gate_activation="gelu")
    with pytest.raises(ValueError, match="output_final_state must be True or False"):
        bdlru_scan_time_last(gates, values, output_final_state=1)
    with pytest.raises(ValueError, match="gates must be float32, bfloat16, float16 or float64"):
        bdlru_scan_time_last(gates.long(), values)
    with pytest.raises(ValueError, match=r"gate_bias must be None or a floating tensor \[N, m, m\+1\] = \(3, 2, 3\)"):
        bdlru_scan_time_last(gates, values, gate_bias=torch.zeros(3, 6, dtype=torch.float64, device=DEVICE))
    with pytest.raises(ValueError, match=r"document_starts must be None or a bool tensor \[B, T\] = \(2, 8\)"):
        bdlru_scan_time_last(gates, values, document_starts=torch.zeros(2, 8, device=DEVICE))


@needs_triton
@pytest.mark.parametrize("m", [2, 4])
def test_fullgraph_compile_traces_the_custom_op(m):
    """torch.compile(fullgraph=True) sees one opaque op forward and backward (no graph break), same results; with
    document starts and a gate bias too."""
    torch._dynamo.reset()
    gates, values, h0 = _inputs(2, 3, 20, m=m, dtype=torch.float32)

    bias = torch.randn(3, m, m + 1, device=DEVICE, requires_grad=True)
    starts = _starts(2, 20, seed=1)

    def loss(g, v, h, bias):
        states, final = bdlru_scan_time_last(g, v, h, "sigmoid", True, backend="triton")
        packed, _ = bdlru_scan_time_last(g, v, h, "sigmoid", backend="triton", document_starts=starts, gate_bias=bias)
        return states.square().sum() + final.sum() + packed.sin().sum()

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    eager_grads = torch.autograd.grad(loss(gates, values, h0, bias), [gates, values, h0, bias])
    compiled_grads = torch.autograd.grad(compiled(gates, values, h0, bias), [gates, values, h0, bias])
    for got, want in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


@needs_triton
def test_launch_options_by_programs_per_sm():
    """`_grid` for BD-LRU (`blocked`): a grid of fewer than BD2_SMALL_GRID_BELOW programs (rows x blocks) per SM runs
    in segments of a row where H-LRU m = 2's rule gives 2 runs or more (`_m2_segments`, at M2_WARPS_PER_SM forward
    and BD2_BACKWARD_WARPS_PER_SM backward; one block a program, a warp a run), else the tile scan; one of that many
    in threads (IN_THREADS_TILE on a GPU), whatever H-LRU m = 2's thresholds say; one program per (row, BC blocks)
    otherwise; the forward pipelines its tile loop below BD2_REGISTER_PREFETCH_FROM programs per SM, and prefetches
    the next tile into registers from there. The backward takes no one-wave register cap (H-LRU's made it spill): on a GPU,
    in threads a program a row and without a gate bias, the cap of `_fewest_waves_register_cap`, else none; in threads
    it pipelines its tile loop (BD2_BACKWARD_STAGES, more on small grids, within PIPELINE_SHARED_BYTES)."""
    sms, bc = scan_time_last._num_sms(DEVICE), scan_time_last._tile()["BC"]
    programs = scan_time_last.BD2_SMALL_GRID_BELOW * sms
    # so that the H-LRU check below can fail (its backward is small below SMALL_GRID_BELOW)
    assert scan_time_last.BD2_SMALL_GRID_BELOW < scan_time_last.SMALL_GRID_BELOW
    hlru = scan_time_last._grid(2, programs * bc // 2, 4096, DEVICE, backward=True, order=2)[1]
    # the same grid is small for H-LRU m = 2: segments of a row
    assert hlru["SEGMENTS"] > 1
    for B, N in ((1, 1), (1, 300), (1, (programs - 1) * bc), (2, programs * bc // 2), (4, programs * bc)):
        small = B * -(-N // bc) < programs
        grid, forward = scan_time_last._grid(B, N, 4096, DEVICE, order=2, blocked=True)
        _, backward = scan_time_last._grid(B, N, 4096, DEVICE, backward=True, order=2, blocked=True)
        for options, warps_per_sm in ((forward, scan_time_last.M2_WARPS_PER_SM),
                                      (backward, scan_time_last.BD2_BACKWARD_WARPS_PER_SM)):
            runs = scan_time_last._m2_segments(B * N, DEVICE, warps_per_sm) if small else 1
            assert options["SEGMENTS"] == (runs if runs > 1 else 1), (B, N)
            assert options["IN_THREADS"] is (not small or runs > 1), (B, N)
            assert options["BC"] == (1 if runs > 1 else bc)
            cap = None
            if GPU and options is backward and options["IN_THREADS"] and runs == 1:
                cap = scan_time_last._fewest_waves_register_cap(B * -(-N // bc), 1, DEVICE,
                                                                scan_time_last.BD2_BACKWARD_REGISTERS,
                                                                scan_time_last.BD2_BACKWARD_LEAST_REGISTERS)
            assert options.get("maxnreg") == cap, (B, N)
            biased = scan_time_last._grid(B, N, 4096, DEVICE, backward=True, order=2, blocked=True, gate_bias=True)[1]
            assert "maxnreg" not in biased and {k: v for k, v in biased.items() if k != "maxnreg"} == \
                {k: v for k, v in backward.items() if k != "maxnreg"}
            if GPU:
                tile = dict(scan_time_last.IN_THREADS_TILE if options["IN_THREADS"] else scan_time_last.TILE)
                if runs > 1:
                    tile.update(num_warps=runs)
                assert {k: options[k] for k in tile} == tile
        assert grid == (B * -(-N // forward["BC"]),)
        assert forward["PREFETCH"] is (grid[0] >= scan_time_last.BD2_REGISTER_PREFETCH_FROM * sms)
        assert forward["STAGES"] == (1 if forward["PREFETCH"] else scan_time_last.FORWARD_STAGES)
        assert "PREFETCH" not in backward
        # the backward pipelines its loop in threads: more stages on grids of under SMALL_GRID_BELOW programs per SM,
        # fewer where the buffers would pass PIPELINE_SHARED_BYTES; the tile scan's loop is not pipelined
        few = B * -(-N // backward["BC"]) < scan_time_last.SMALL_GRID_BELOW * sms
        stages = scan_time_last.BD2_BACKWARD_SMALL_GRID_STAGES if few else scan_time_last.BD2_BACKWARD_STAGES
        tile_bytes = 18 * backward["BC"] * backward["SEGMENTS"] * backward["BT"] * 2
        while (stages - 1) * tile_bytes > scan_time_last.PIPELINE_SHARED_BYTES:
            stages -= 1
        assert backward["STAGES"] == (stages if backward["IN_THREADS"] else 1), (B, N)
    # a small grid above ran in segments (with the GPU's one block a program every small grid does; the
    # interpreter's two blocks a program leave (programs - 1) * bc blocks forward to the tile scan)
    assert scan_time_last._grid(1, 1, 4096, DEVICE, order=2, blocked=True)[1]["SEGMENTS"] > 1
    # and a large grid prefetched in registers
    blocks = scan_time_last.BD2_REGISTER_PREFETCH_FROM * sms * bc
    for B, N, prefetch in ((1, blocks - bc, False), (1, blocks, True), (32, 1024, True)):
        grid, forward = scan_time_last._grid(B, N, 2048, DEVICE, order=2, blocked=True)
        assert forward["PREFETCH"] is prefetch and forward["STAGES"] == (1 if prefetch else
                                                                           scan_time_last.FORWARD_STAGES), (B, N)


@needs_triton
@pytest.mark.parametrize("num_warps", [1, 2])
def test_the_fewest_waves_register_cap(num_warps):
    """`_fewest_waves_register_cap(programs, num_warps, device, registers, least)`: None where the compiler's
    `registers` already run the grid in as few waves (rounds of resident programs per SM) as any cap down to `least`
    allows; else the largest multiple of 8, from `least` to under `registers`, that runs it in that many (8 more would
    need another wave)."""
    sms, per_sm_registers = scan_time_last._num_sms(DEVICE), scan_time_last.REGISTERS_PER_SM
    registers, least = 200, 96  # wider than BD-LRU block size 2's (144, 128), so that caps of several sizes arise

    def waves(programs, cap):
        return -(-(-(-programs // sms)) // (per_sm_registers // (32 * num_warps * cap)))

    seen = set()
    for programs in range(1, 300 * sms, 37):
        cap = scan_time_last._fewest_waves_register_cap(programs, num_warps, DEVICE, registers, least)
        fewest = min(waves(programs, r) for r in range(least, registers + 1, 8))
        if cap is None:
            assert waves(programs, registers) == fewest, programs
        else:
            assert cap % 8 == 0 and least <= cap < registers, (programs, cap)
            assert waves(programs, cap) == fewest < waves(programs, cap + 8), (programs, cap)
        seen.add(cap)
    assert None in seen and len(seen) >= 3  # grids that need no cap, and caps of more than one size


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="needs CUDA")
@pytest.mark.parametrize("B,N,T", [(8, 300, 3000), (4, 300, 3000), (1, 300, 3000)])
def test_gpu_pipelined_backward_equals_the_unpipelined_one(B, N, T, monkeypatch):
    """BD-LRU block size 2's backward with its tile loop software-pipelined (2 stages on a large grid, 3 on a smaller
    one and on a small grid's runs of a row; bfloat16, where the buffers fit) gives bit for bit the gradients of the
    unpipelined loop (whose exactness the float64 tests check), with document starts, a gate bias, an initial state
    and the final state's gradient."""
    gates, values, h0 = _inputs(B, N, T, m=2, dtype=torch.bfloat16, seed=B)
    h0 = h0.detach().float().requires_grad_()
    bias = torch.randn(N, 2, 3, device=DEVICE, generator=torch.Generator(DEVICE).manual_seed(1)).requires_grad_()
    starts = torch.rand(B, T, device=DEVICE, generator=torch.Generator(DEVICE).manual_seed(2)).lt(0.002)
    options = scan_time_last._grid(B, N, T, DEVICE, backward=True, order=2, blocked=True, gate_bias=True)[1]
    assert options["STAGES"] == (2 if B == 8 else 3) and options["IN_THREADS"], options

    def gradients():
        states, final = bdlru_scan_time_last(gates, values, h0, "softmax", True, backend="triton",
                                             document_starts=starts, gate_bias=bias)
        weights = torch.linspace(-1.0, 1.0, T, device=DEVICE)
        loss = (states.float() * weights).sum() + (final * 0.7).sum()
        return torch.autograd.grad(loss, (gates, values, h0, bias))

    pipelined = gradients()
    monkeypatch.setattr(scan_time_last, "BD2_BACKWARD_STAGES", 1)
    monkeypatch.setattr(scan_time_last, "BD2_BACKWARD_SMALL_GRID_STAGES", 1)
    assert scan_time_last._grid(B, N, T, DEVICE, backward=True, order=2, blocked=True)[1]["STAGES"] == 1
    for got, want in zip(pipelined, gradients()):
        assert torch.equal(got, want)


@needs_triton
def test_the_backwards_pipeline_fits_its_shared_memory_budget(monkeypatch):
    """`_grid` with the GPU's tiles (the rule alone: nothing launches) for BD-LRU block size 2's backward at every
    grid size and input width: in threads its pipeline's buffers (STAGES - 1 tiles of its 18 input rows a block) stay
    within PIPELINE_SHARED_BYTES, with as many stages as the budget allows up to the rule's; the tile scan's loop is
    not pipelined."""
    monkeypatch.setattr(scan_time_last, "_INTERPRET", False)
    budget, sms = scan_time_last.PIPELINE_SHARED_BYTES, scan_time_last._num_sms(DEVICE)
    seen = set()
    for B, N in ((1, 1), (1, 40), (1, 256), (1, 600), (2, 512), (8, 512), (32, 1024)):
        for itemsize in (2, 4, 8):
            grid, options = scan_time_last._grid(B, N, 4096, DEVICE, backward=True, order=2, blocked=True,
                                                 itemsize=itemsize)
            if not options["IN_THREADS"]:
                assert options["STAGES"] == 1, (B, N, itemsize)
                seen.add("tile scan")
                continue
            few = grid[0] < scan_time_last.SMALL_GRID_BELOW * sms
            wanted = scan_time_last.BD2_BACKWARD_SMALL_GRID_STAGES if few else scan_time_last.BD2_BACKWARD_STAGES
            tile_bytes = 18 * options["BC"] * options["SEGMENTS"] * options["BT"] * itemsize
            assert 1 <= options["STAGES"] <= wanted and (options["STAGES"] - 1) * tile_bytes <= budget, (B, N)
            assert options["STAGES"] == wanted or options["STAGES"] * tile_bytes > budget, (B, N, itemsize)
            seen.add((options["STAGES"], itemsize))
    # pipelined in bfloat16 on small and large grids, the budget binding in float64, and the tile scan
    assert {(scan_time_last.BD2_BACKWARD_SMALL_GRID_STAGES, 2), (scan_time_last.BD2_BACKWARD_STAGES, 2),
            "tile scan"} <= seen and any(s in ((1, 8), (2, 8)) for s in seen)


@needs_triton
@pytest.mark.parametrize("segments_on", [False, True])
def test_block_size_4_launches_in_threads_on_every_grid(segments_on, monkeypatch):
    """`_grid` for BD-LRU block size 4 (`order=4, blocked`): one program per (row, BC blocks) on every grid, BD4_TILE
    on a GPU (4 steps a thread: BT = 32 lanes x 4), no register cap, and tiles no longer than the sequence; with
    BD4_SEGMENTS, a grid that `_m2_segments` (at BD4_WARPS_PER_SM) gives 2 runs or more runs one block a program
    in that many warps, forward and backward alike."""
    monkeypatch.setattr(scan_time_last, "BD4_SEGMENTS", segments_on)
    seen = set()
    for B, N, T in ((1, 1, 5), (1, 256, 16384), (1, 512, 16384), (64, 512, 2048)):
        for backward in (False, True):
            grid, options = scan_time_last._grid(B, N, T, DEVICE, backward=backward, order=4, blocked=True)
            runs = scan_time_last._m2_segments(B * N, DEVICE, scan_time_last.BD4_WARPS_PER_SM) if segments_on else 1
            assert options["SEGMENTS"] == runs
            assert grid == (B * -(-N // options["BC"]),) and (runs == 1 or options["BC"] == 1)
            assert "maxnreg" not in options and "IN_THREADS" not in options
            assert 16 <= options["BT"] and (options["BT"] <= T or options["BT"] == 16)
            if GPU and T >= 128:
                tile = dict(scan_time_last.BD4_TILE)
                if runs > 1:
                    tile.update(num_warps=runs * tile["num_warps"])
                assert {k: options[k] for k in tile} == tile
                assert options["BT"] == 32 * 4 * tile["num_warps"] // tile["BC"] // runs
            seen.add(runs)
    assert len(seen) == (4 if segments_on else 1)  # on: 8 runs at one block, 4 at 256 (B1 D1024), 2 at 512, 1 at B64


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="needs CUDA")
@pytest.mark.parametrize("B,N,T", [(2, 70, 5000), (1, 3, 20000)])
def test_gpu_tiles_match_the_float64_reference(B, N, T, block_size):
    """The GPU's tiles (block size 2 in threads: 256-step one-warp tiles; tile scan: TILE's; block size 4: BD4_TILE)
    over many tiles (and a partial one), float64 inputs: states, final state and every gradient against the
    reference, plain and with document starts and a gate bias."""
    m = block_size
    inputs = _inputs(B, N, T, m=m, seed=T)
    want = _run("torch", *inputs, "softmax", True)
    got = _run("triton", *inputs, "softmax", True)
    for g, w in zip(got, want):
        scale = w.abs().max().clamp(min=1.0)
        torch.testing.assert_close(g.to(w.dtype) / scale, w / scale, rtol=0, atol=1e-5)
    gates, values, h0 = inputs
    bias = torch.randn(N, m, m + 1, dtype=torch.float64, generator=torch.Generator().manual_seed(2)).to(DEVICE)
    bias.requires_grad_()
    starts = torch.rand(B, T, generator=torch.Generator().manual_seed(3)).lt(0.002).to(DEVICE)
    results = []
    for backend in ("torch", "triton"):
        states, final = bdlru_scan_time_last(gates, values, h0, "softmax", True, backend=backend,
                                             document_starts=starts, gate_bias=bias)
        loss = (states * torch.linspace(-1.0, 1.0, T, dtype=torch.float64, device=DEVICE)).sum() + final.sum()
        results.append((states, final) + torch.autograd.grad(loss, (gates, values, h0, bias)))
    for g, w in zip(results[1], results[0]):
        scale = w.abs().max().clamp(min=1.0)
        torch.testing.assert_close(g.to(w.dtype) / scale, w / scale, rtol=0, atol=1e-5)
