"""hlru_scan_time_last: the first-order scan on time-last tensors (scan_time_last.py). The Triton kernels (the
interpreter on CPU, the GPU where there is one) against the reference in float64, the reference's layout against a
direct loop, gradients, every gate activation, several tiles and channel blocks, and bad inputs."""

import os

import pytest
import torch
import torch.nn.functional as F

from hf_lrnn import bdlru_scan_time_last, hlru_scan_time_last, scan_time_last
from hf_lrnn.scan_torch import GATE_ACTIVATIONS
from helpers import assert_same_training_step

GPU = torch.cuda.is_available()
DEVICE = "cuda" if GPU else "cpu"
TRITON_OK = scan_time_last.triton is not None and (GPU or os.environ.get("TRITON_INTERPRET") == "1")
needs_triton = pytest.mark.skipif(not TRITON_OK, reason="needs CUDA or TRITON_INTERPRET=1")


def _inputs(B, N, T, dtype=torch.float64, with_h0=True, seed=0, m=1):
    generator = torch.Generator().manual_seed(seed)
    gates = (torch.randn(B, N, m + 1, T, generator=generator, dtype=torch.float64) * 2).to(DEVICE, dtype)
    values = torch.randn(B, N, T, generator=generator, dtype=torch.float64).to(DEVICE, dtype)
    h0 = torch.randn(B, N, m, generator=generator, dtype=torch.float64).to(DEVICE, dtype) if with_h0 else None
    return [t.requires_grad_() if t is not None else None for t in (gates, values, h0)]


def _small_grid_below(monkeypatch, programs_per_sm):
    """Set the programs per SM below which a grid is small (`_grid`): SMALL_GRID_BELOW and H-LRU m = 2's forward's
    M2_FORWARD_SMALL_GRID_BELOW alike (0: no grid is small; 10**9: every grid is; m = 2 then runs in segments of a
    row, forward and backward)."""
    monkeypatch.setattr(scan_time_last, "SMALL_GRID_BELOW", programs_per_sm)
    monkeypatch.setattr(scan_time_last, "M2_FORWARD_SMALL_GRID_BELOW", programs_per_sm)


# The launch paths a test covers (`_take_path`): grids that are not small (m = 2 a warp a row) and small grids (m = 2
# in segments of a row).
PATHS = ["large grid", "small grid"]
M_AND_PATH = [(m, path) for m in (1, 2, 4) for path in PATHS]


def _take_path(monkeypatch, path):
    _small_grid_below(monkeypatch, 0 if path == "large grid" else 10**9)


def _run(backend, gates, values, h0, activation, want_final, document_starts=None):
    """States, final state and the gradients of a loss that weighs every step differently (and the final state)."""
    states, final = hlru_scan_time_last(gates, values, h0, activation, want_final, backend=backend,
                                        document_starts=document_starts)
    T = values.shape[-1]
    weights = torch.linspace(-1.0, 1.0, T, dtype=torch.float64, device=values.device)
    loss = (states.double() * weights).sum() + (0.7 * final.double().sum() if want_final else 0.0)
    wrt = [t for t in (gates, values, h0) if t is not None]
    return (states, final) + torch.autograd.grad(loss, wrt)


@pytest.mark.parametrize("m", [1, 2, 4])
def test_the_reference_in_time_last_layout_is_the_direct_loop(m):
    """The layout contract on the torch backend: gates[b, n, i-1, t] is the lag-i logit and gates[b, n, m, t] the
    input gate's, s_t = sum_i a_t^(i) s_{t-i} + g_t v_t with softmax-normalised gates, the initial window
    (s_0, s_{-1}, ...), the final window (s_T, s_{T-1}, ...)."""
    gates, values, h0 = (t.detach() for t in _inputs(2, 3, 9, m=m))
    states, final = hlru_scan_time_last(gates, values, h0, output_final_state=True, backend="torch")
    want = torch.empty_like(values)
    window = [h0[..., i] for i in range(m)]  # s_{t-1}, s_{t-2}, ...
    for t in range(values.shape[-1]):
        c = torch.softmax(gates[:, :, :, t], dim=-1)
        s = sum(c[..., i] * window[i] for i in range(m)) + c[..., m] * values[:, :, t]
        window = [s] + window[:-1]
        want[:, :, t] = s
    torch.testing.assert_close(states, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(final, torch.stack(window, -1), rtol=1e-12, atol=1e-12)


@needs_triton
@pytest.mark.parametrize("m", [1, 2, 4])
@pytest.mark.parametrize("activation", GATE_ACTIVATIONS)
@pytest.mark.parametrize("B,N,T,with_h0,want_final", [(2, 3, 37, True, True), (1, 4, 16, False, False),
                                                       (3, 1, 50, True, False), (2, 5, 5, False, True),
                                                       (2, 3, 1, True, True), (1, 2, 17, True, True)])
def test_triton_matches_the_float64_reference(m, activation, B, N, T, with_h0, want_final):
    """float64 inputs (computed in float32 by the kernels): states, final window and the gradients of gates, values
    and initial window. In the interpreter tiles are 2 channels x 16 steps: T = 17, 37 and 50 take several tiles
    (17: a tile of one step, where m = 2's lag 2 reaches into the tile before), N = 3 and 5 a partial channel block,
    T = 1 a final window that is half the initial one."""
    inputs = _inputs(B, N, T, with_h0=with_h0, seed=B * 100 + T, m=m)
    reference = _run("torch", *inputs, activation, want_final)
    triton_out = _run("triton", *inputs, activation, want_final)
    assert triton_out[0].dtype == torch.float64 and triton_out[0].shape == (B, N, T)
    for got, want in zip(triton_out, reference):
        if want is None:
            assert got is None
            continue
        scale = want.abs().max().clamp(min=1.0)  # "none" grows the state without bound
        # the final state is float32 from the kernels (float64 from the reference on float64 inputs)
        torch.testing.assert_close(got.to(want.dtype) / scale, want / scale, rtol=0, atol=5e-6)


@needs_triton
@pytest.mark.parametrize("m", [1, 2, 4])
@pytest.mark.parametrize("stages", [1, 3])
def test_forward_pipeline_depths_match_the_reference(m, stages, monkeypatch):
    """The forwards' tile loops without a software pipeline and with FORWARD_STAGES' (the interpreter ignores
    num_stages; on a GPU the loads go through shared memory): states, final state and gradients against the float64
    reference, over several tiles, with an initial state, document starts and a partial last tile."""
    monkeypatch.setattr(scan_time_last, "FORWARD_STAGES", stages)
    grid, options = scan_time_last._grid(2, 3, 50, DEVICE, order=m)
    assert options["STAGES"] == stages and "PREFETCH" not in options
    assert "STAGES" not in scan_time_last._grid(2, 3, 50, DEVICE, backward=True, order=m)[1]
    gates, values, h0 = _inputs(2, 3, 50, seed=7, m=m)
    starts = torch.zeros(2, 50, dtype=torch.bool, device=DEVICE)
    starts[0, 20] = starts[1, 33] = True
    for document_starts in (None, starts):
        reference = _run("torch", gates, values, h0, "softmax", True, document_starts)
        got = _run("triton", gates, values, h0, "softmax", True, document_starts)
        for g, w in zip(got, reference):
            torch.testing.assert_close(g.to(w.dtype), w, rtol=0, atol=5e-6)


@needs_triton
@pytest.mark.parametrize("m,path", M_AND_PATH)
@pytest.mark.parametrize("activation", ["softmax", "tanh"])
def test_gate_bias_inside_the_kernels_matches_the_reference(m, path, activation, monkeypatch):
    """gate_bias [N, m+1], added to the logits inside the kernels: states, final window and the gradients of gates,
    values, initial window and the bias against the float64 reference (which adds it to the logits first), with
    document starts, over several tiles, on every launch path (PATHS)."""
    _take_path(monkeypatch, path)
    gates, values, h0 = _inputs(2, 3, 50, seed=11, m=m)
    bias = (torch.randn(3, m + 1, dtype=torch.float64, generator=torch.Generator().manual_seed(5)) * 2).to(DEVICE)
    bias.requires_grad_()
    starts = torch.zeros(2, 50, dtype=torch.bool, device=DEVICE)
    starts[0, 17] = starts[1, 40] = True
    weights = torch.linspace(-1.0, 1.0, 50, dtype=torch.float64, device=DEVICE)
    results = []
    for backend in ("torch", "triton"):
        states, final = hlru_scan_time_last(gates, values, h0, activation, True, backend=backend,
                                            document_starts=starts, gate_bias=bias)
        loss = (states * weights).sum() + 0.7 * final.sum()
        results.append((states, final) + torch.autograd.grad(loss, (gates, values, h0, bias)))
    for got, want in zip(results[1], results[0]):  # the kernels' final window is float32, as documented
        torch.testing.assert_close(got.to(want.dtype), want, rtol=0, atol=5e-6)
    # the reference adds the bias to the logits: the same as a call without it on the biased logits
    unbiased = hlru_scan_time_last(gates + bias[:, :, None], values, h0, activation, True, backend="torch",
                                   document_starts=starts)
    torch.testing.assert_close(results[0][0], unbiased[0], rtol=0, atol=1e-12)
    assert results[1][5].abs().sum() > 0  # the bias gradient is not trivially zero


@needs_triton
@pytest.mark.parametrize("m,path", M_AND_PATH)
@pytest.mark.parametrize("T,with_h0,with_starts", [(50, True, True), (37, False, True), (17, True, False),
                                                   (2, True, True), (1, True, False)])
def test_window_output_matches_the_reference(m, path, T, with_h0, with_starts, monkeypatch):
    """output_window=True: the window [B, N, m, T] = (s_t, s_{t-1}) the scan writes (and its gradient flowing back
    into both entries) against the float64 reference's window, built from its states; document starts at step 0, in
    the middle and at the last step zero the second entry; the initial window fills it at step 0. Every launch path
    (PATHS)."""
    _take_path(monkeypatch, path)
    gates, values, h0 = _inputs(2, 3, T, with_h0=with_h0, seed=T + 3, m=m)
    starts = None
    if with_starts:
        starts = torch.zeros(2, T, dtype=torch.bool, device=DEVICE)
        starts[0, T // 2] = starts[1, 0] = starts[1, T - 1] = True
    weights = torch.randn(m, T, dtype=torch.float64, generator=torch.Generator().manual_seed(T)).to(DEVICE)
    wrt = [t for t in (gates, values, h0) if t is not None]
    results = []
    for backend in ("torch", "triton"):
        window, final = hlru_scan_time_last(gates, values, h0, "softmax", True, backend=backend,
                                            document_starts=starts, output_window=True)
        assert window.shape == (2, 3, m, T)
        loss = (window * weights).sum() + 0.3 * final.sum()
        results.append((window, final) + torch.autograd.grad(loss, wrt))
    for got, want in zip(results[1], results[0]):
        torch.testing.assert_close(got.to(want.dtype), want, rtol=0, atol=5e-6)
    states = hlru_scan_time_last(gates, values, h0, "softmax", backend="torch", document_starts=starts)[0]
    torch.testing.assert_close(results[0][0][:, :, 0], states, rtol=0, atol=0)  # the first entry is the states
    if m == 2:  # the second: the states one step before, the initial window's first entry at step 0, 0 at a start
        previous = torch.cat([h0[..., :1] if h0 is not None else torch.zeros_like(states[..., :1]),
                              states[..., :-1]], dim=-1)
        if starts is not None:
            previous = previous.masked_fill(starts[:, None, :], 0.0)
        torch.testing.assert_close(results[0][0][:, :, 1], previous, rtol=0, atol=0)


@needs_triton
@pytest.mark.parametrize("mode", ["rows", "chunks", "chunks-composing-maps"])
@pytest.mark.parametrize("activation", ["softmax", "relu"])
@pytest.mark.parametrize("T,with_h0,with_starts,window", [(50, True, True, True), (64, True, False, False),
                                                          (37, False, True, False), (81, True, True, True)])
def test_order_4_in_chunks_and_in_whole_rows_matches_the_reference(mode, activation, T, with_h0, with_starts, window,
                                                                     monkeypatch):
    """m = 4 on small grids splits each row into chunks of one tile joined by a look-back (M4_CHUNKED_BELOW), else
    one program walks each row: both against the float64 reference, with the gate bias, document starts (one at a
    chunk's first step: 32, 64 in the interpreter's 16-step tiles), the window output and the final window: outputs
    and every gradient, the bias's and the initial window's included. "composing-maps" publishes only every third
    chunk's carry, so that look-backs compose the other chunks' maps (the interpreter runs programs in order:
    otherwise every look-back finds its predecessor's carry at once)."""
    monkeypatch.setattr(scan_time_last, "M4_CHUNKED_BELOW", 0 if mode == "rows" else 10**9)
    monkeypatch.setattr(scan_time_last, "M4_SEGMENTS", False)  # the forward's chunks too, not its segments
    monkeypatch.setattr(scan_time_last, "_PREFIX_EVERY", 3 if mode.endswith("composing-maps") else 1)
    B, N, m = 2, 3, 4
    for backward in (False, True):  # (the GPU's 256-step tiles make one chunk of these rows: whole rows)
        options = scan_time_last._grid(B, N, T, DEVICE, backward=backward, order=m)[1]
        tiles = -(-T // options["BT"])
        assert options["CHUNKED"] is (mode != "rows" and tiles > 1)
        assert options["num_chunks"] == (tiles if options["CHUNKED"] else 1)
    gates, values, h0 = _inputs(B, N, T, with_h0=with_h0, seed=T + 40, m=m)
    bias = (torch.randn(N, m + 1, dtype=torch.float64, generator=torch.Generator().manual_seed(T)) * 2).to(DEVICE)
    bias.requires_grad_()
    starts = None
    if with_starts:
        starts = torch.zeros(B, T, dtype=torch.bool, device=DEVICE)
        starts[0, 32] = starts[1, 5] = True
        starts[1, 64 if T > 64 else 6] = True
    weights = torch.randn(m if window else 1, T, dtype=torch.float64,
                          generator=torch.Generator().manual_seed(T + 1)).to(DEVICE)
    wrt = [t for t in (gates, values, h0, bias) if t is not None]
    results = []
    for backend in ("torch", "triton"):
        out, final = hlru_scan_time_last(gates, values, h0, activation, True, backend=backend, document_starts=starts,
                                         gate_bias=bias, output_window=window)
        loss = (out * (weights if window else weights[0])).sum() + 0.3 * final.sum()
        results.append((out, final) + torch.autograd.grad(loss, wrt))
    for i, (got, want) in enumerate(zip(results[1], results[0])):
        scale = want.abs().max().clamp(min=1.0)  # relu's gates do not bound the state
        # the bias gradient sums B * T float32 terms
        torch.testing.assert_close(got.to(want.dtype) / scale, want / scale, rtol=0,
                                   atol=2e-5 if i == len(results[0]) - 1 else 5e-6)


def _in_segments(monkeypatch, m, segments):
    """Run order m's small grids in `segments` runs of a row's tile, a warp each: m = 2 forward and backward (every
    grid small), m = 4's forward (M4_SEGMENTS on a small grid; its backward in chunks)."""
    monkeypatch.setattr(scan_time_last, "M2_SEGMENTS", segments)
    if m == 2:
        _small_grid_below(monkeypatch, 10**9)
    else:
        monkeypatch.setattr(scan_time_last, "M4_SEGMENTS", True)
        monkeypatch.setattr(scan_time_last, "M4_CHUNKED_BELOW", 10**9)


@needs_triton
@pytest.mark.parametrize("blocked,m,segments", [(False, 2, None), (False, 2, 2), (False, 4, None), (False, 4, 2),
                                                (True, 2, None), (True, 4, None)])
def test_whole_tiles_without_bounds_masks_equal_the_masked_kernels(blocked, m, segments, monkeypatch):
    """Where every tile is whole (`_even`: T a multiple of the tile's steps, N of its channels) the kernels drop their
    bounds masks (`_in_bounds` is a constant): states, final state and every gradient equal those of the same launch
    with the masks (EVEN_TILES off; bit for bit in the interpreter, to 1e-6 of the largest compiled), with the gate
    bias, an initial state and document starts: the forwards of H-LRU m = 2 and 4 (also in segments of a row) and of
    BD-LRU block sizes 2 and 4, and BD-LRU 4's backward. Both against the float64 reference too."""
    if segments:
        _in_segments(monkeypatch, m, segments)
    elif m == 4 and not blocked:  # whole rows (one run a tile), where m = 4's forward drops its masks
        monkeypatch.setattr(scan_time_last, "M4_SEGMENTS", False)
        monkeypatch.setattr(scan_time_last, "M4_CHUNKED_BELOW", 0)
    B, N, T = 2, 4, 256  # a multiple of the interpreter's tiles of 16 steps, and of 8 runs of them
    options = scan_time_last._grid(B, N, T, DEVICE, order=m, blocked=blocked)[1]
    if not scan_time_last._even(dict(options, T=T, N=N)):  # compiled: two tiles of the launch's steps
        T = 2 * options["BT"] * options.get("SEGMENTS", 1)
        options = scan_time_last._grid(B, N, T, DEVICE, order=m, blocked=blocked)[1]
    assert scan_time_last._even(dict(options, T=T, N=N))  # the launch takes the unmasked path
    if m == 4 and not blocked:
        assert scan_time_last._even_m4_forward(dict(options, T=T, N=N)) is (segments is None)
    assert not scan_time_last._even(dict(options, T=T - 1, N=N))
    generator = torch.Generator().manual_seed(m + 10 * blocked)
    shape = (B, N, m, m + 1, T) if blocked else (B, N, m + 1, T)
    gates = (torch.randn(shape, generator=generator, dtype=torch.float64) * 2).to(DEVICE)
    values = torch.randn((B, N, m, T) if blocked else (B, N, T), generator=generator, dtype=torch.float64).to(DEVICE)
    h0 = torch.randn(B, N, m, generator=generator, dtype=torch.float64).to(DEVICE)
    bias = torch.randn(shape[1:-1], generator=generator, dtype=torch.float64).to(DEVICE)
    starts = torch.zeros(B, T, dtype=torch.bool, device=DEVICE)
    starts[0, 16] = starts[1, 33] = starts[0, 129] = starts[1, T - 1] = True
    results = []
    for even in (True, False):
        monkeypatch.setattr(scan_time_last, "EVEN_TILES", even)
        states, final = scan_time_last.time_last_forward(gates, values, h0, "softmax", True, starts, bias)
        d_states = torch.randn(states.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
        d_final = torch.randn(final.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
        grads = scan_time_last.time_last_backward(gates, values, states, h0, d_states.to(DEVICE), d_final.to(DEVICE),
                                                  "softmax", starts, bias)
        results.append((states, final) + tuple(grads))
    for unmasked, masked in zip(*results):
        if DEVICE == "cpu":  # the interpreter: the same arithmetic, bit for bit
            assert torch.equal(unmasked, masked)
        else:  # compiled, the two may contract different products into FMAs
            scale = masked.abs().max().clamp(min=1.0)
            torch.testing.assert_close(unmasked / scale, masked / scale, rtol=0, atol=1e-6)
    # and the unmasked path against the float64 reference, through the public op's autograd
    monkeypatch.setattr(scan_time_last, "EVEN_TILES", True)
    outputs = []
    for backend in ("torch", "triton"):
        inputs = [t.clone().requires_grad_() for t in (gates, values, h0)]
        op = bdlru_scan_time_last if blocked else hlru_scan_time_last
        states, final = op(*inputs, output_final_state=True, backend=backend)
        (states.square().sum() + final.sum()).backward()
        outputs.append([states, final] + [t.grad for t in inputs])
    for got, want in zip(*outputs):
        scale = want.abs().max().clamp(min=1.0)
        torch.testing.assert_close(got.to(want.dtype) / scale, want / scale, rtol=0, atol=5e-6)


@needs_triton
@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("segments", [2, 4])
@pytest.mark.parametrize("T,with_h0,window", [(50, True, True), (64, False, False), (130, True, True),
                                              (17, True, False), (1, True, True)])
def test_in_segments_matches_the_reference(m, segments, T, with_h0, window, monkeypatch):
    """Small grids in segments of a row: each tile one channel's `segments` runs of 16 steps (the interpreter's), a
    warp each on a GPU, composed in threads and joined across the runs (m = 2: `_segment_carries`, forward and in
    reverse; m = 4: `_segment_carries4`, the forward, the backward in chunks): window or states, final window and
    every gradient against the float64 reference, with the gate bias, an initial window and document starts at a
    run's first and last step and at a tile's first step (16, 31, 32, 64), several tiles and partial ones (T = 17,
    50, 130), one step."""
    _in_segments(monkeypatch, m, segments)
    B, N = 2, 3
    forward, backward = (scan_time_last._grid(B, N, T, DEVICE, backward=b, order=m)[1] for b in (False, True))
    assert forward["SEGMENTS"] == forward["num_warps"] == segments and forward["BC"] == 1
    if m == 2:
        assert backward["SEGMENTS"] == segments and backward["BC"] == 1
    else:
        assert not forward["CHUNKED"] and "SEGMENTS" not in backward
        assert backward["CHUNKED"] is (T > backward["BT"])
    gates, values, h0 = _inputs(B, N, T, with_h0=with_h0, seed=T + segments + 20 * m, m=m)
    bias = torch.randn(N, m + 1, dtype=torch.float64, generator=torch.Generator().manual_seed(T)).to(DEVICE)
    bias.requires_grad_()
    starts = torch.zeros(B, T, dtype=torch.bool, device=DEVICE)
    for step, row in ((16, 0), (31, 1), (32, 0), (64, 1), (T - 1, 0)):
        if step < T:
            starts[row, step] = True
    weights = torch.randn(m if window else 1, T, dtype=torch.float64,
                          generator=torch.Generator().manual_seed(T + 1)).to(DEVICE)
    wrt = [t for t in (gates, values, h0, bias) if t is not None]
    results = []
    for backend in ("torch", "triton"):
        out, final = hlru_scan_time_last(gates, values, h0, "softmax", True, backend=backend, document_starts=starts,
                                         gate_bias=bias, output_window=window)
        loss = (out * (weights if window else weights[0])).sum() + 0.3 * final.sum()
        results.append((out, final) + torch.autograd.grad(loss, wrt))
    for i, (got, want) in enumerate(zip(results[1], results[0])):  # the bias gradient sums B * T float32 terms
        torch.testing.assert_close(got.to(want.dtype), want, rtol=0, atol=2e-5 if i == len(results[0]) - 1 else 5e-6)


@needs_triton
def test_order_4_segments_replace_the_forwards_chunks_where_set(monkeypatch):
    """M4_SEGMENTS: on, the small grids that take chunks run their forward as whole rows of one channel a program in
    as many warps as `_m2_segments` gives for M4_WARPS_PER_SM (chunks where that is 1); the backward keeps its chunks,
    larger grids their rows. Off, chunks."""
    sms = scan_time_last._num_sms(DEVICE)
    monkeypatch.setattr(scan_time_last, "M4_SEGMENTS", False)
    assert scan_time_last._grid(1, 5, 4096, DEVICE, order=4)[1]["CHUNKED"] is True
    assert scan_time_last._grid(1, 5, 4096, DEVICE, order=4)[1]["SEGMENTS"] == 1
    monkeypatch.setattr(scan_time_last, "M4_SEGMENTS", True)
    N = scan_time_last.M4_WARPS_PER_SM * sms // 4  # 4 runs a row bring it to M4_WARPS_PER_SM warps per SM
    grid, forward = scan_time_last._grid(1, N, 4096, DEVICE, order=4)
    assert grid == (N,) and forward["SEGMENTS"] == forward["num_warps"] == 4 and forward["BC"] == 1
    assert forward["CHUNKED"] is False and forward["num_chunks"] == 1
    backward = scan_time_last._grid(1, N, 4096, DEVICE, backward=True, order=4)[1]
    assert backward["CHUNKED"] is True and "SEGMENTS" not in backward
    bc = (scan_time_last.M4_TILE if GPU else scan_time_last.INTERPRETER_TILE)["BC"]
    monkeypatch.setattr(scan_time_last, "M4_WARPS_PER_SM", 4)  # (at 16 every small grid gets 2 runs or more)
    one_run = scan_time_last.M4_WARPS_PER_SM * sms // 2 + 8  # 2 runs a row would pass M4_WARPS_PER_SM: chunks
    assert -(-one_run // bc) < scan_time_last.M4_CHUNKED_BELOW * sms  # (a small grid)
    options = scan_time_last._grid(1, one_run, 4096, DEVICE, order=4)[1]
    assert options["SEGMENTS"] == 1 and options["CHUNKED"] is True
    large = scan_time_last._grid(1, scan_time_last.M4_CHUNKED_BELOW * sms * bc, 4096, DEVICE, order=4)[1]
    assert large["SEGMENTS"] == 1 and large["CHUNKED"] is False


@needs_triton
def test_order_4_takes_chunks_on_small_grids_only(monkeypatch):
    """`_grid` at order 4 (the forward without M4_SEGMENTS, and the backward): chunks of one tile below
    M4_CHUNKED_BELOW programs per SM when a row has more than one tile, one program per row otherwise (and always for
    BD-LRU block size 4, and under deterministic algorithms); a chunked grid has a program per (row's channel block,
    chunk)."""
    monkeypatch.setattr(scan_time_last, "M4_SEGMENTS", False)
    bc, sms = scan_time_last._grid(1, 2, 16, DEVICE, order=4)[1]["BC"], scan_time_last._num_sms(DEVICE)
    below = scan_time_last.M4_CHUNKED_BELOW * sms
    for B, N, T, chunked in ((1, (below - 1) * bc, 4096, True), (1, below * bc, 4096, False), (2, 5, 4096, True),
                             (2, 5, 1, False), (2, 5, 20000, True)):
        grid, options = scan_time_last._grid(B, N, T, DEVICE, order=4)
        tiles = -(-T // options["BT"])
        assert options["CHUNKED"] is chunked and (tiles > 1 or not chunked)
        assert grid == (B * -(-N // bc) * (tiles if chunked else 1),)
    assert "CHUNKED" not in scan_time_last._grid(1, 5, 4096, DEVICE, order=4, blocked=True)[1]
    torch.use_deterministic_algorithms(True)  # a look-back may round differently between runs: not then
    try:
        assert scan_time_last._grid(2, 5, 4096, DEVICE, order=4)[1]["CHUNKED"] is False
    finally:
        torch.use_deterministic_algorithms(False)


@needs_triton
def test_the_launch_rule_by_programs_per_sm():
    """`_grid`'s rule (the interpreter counts 132 SMs, an H200's): a grid of fewer than SMALL_GRID_BELOW programs
    per SM is small: m = 2's forward below M2_FORWARD_SMALL_GRID_BELOW runs each row's tiles in segments,
    a warp each (`_m2_segments`: the power of two that brings the grid nearest M2_WARPS_PER_SM warps per SM, one
    program per channel), its backward below SMALL_GRID_BELOW likewise at M2_BACKWARD_WARPS_PER_SM (2 runs or more
    on every such grid); from those on, m = 2 runs a warp a row; one program per block of BC channels. Every forward
    pipelines its tile loop (FORWARD_STAGES), whatever the grid; m = 2's kernels compose in threads on every grid."""
    sms, bc = scan_time_last._num_sms(DEVICE), scan_time_last._tile()["BC"]
    forward_below = scan_time_last.M2_FORWARD_SMALL_GRID_BELOW * sms
    backward_below = scan_time_last.SMALL_GRID_BELOW * sms
    two_runs_below = scan_time_last.M2_WARPS_PER_SM * sms // 2  # rows under which the rule gives 2 runs or more
    assert forward_below < backward_below  # (the cases below cross both thresholds and the 2-run bound)
    for N in (1, two_runs_below, two_runs_below + 1, forward_below * bc - 1, forward_below * bc,
              backward_below * bc - 1, backward_below * bc):
        grid, forward = scan_time_last._grid(1, N, 4096, DEVICE, order=2)
        _, backward = scan_time_last._grid(1, N, 4096, DEVICE, backward=True, order=2)
        _, first_order = scan_time_last._grid(1, N, 4096, DEVICE, order=1)
        runs = scan_time_last._m2_segments(N, DEVICE)
        assert (runs > 1) is (N <= two_runs_below), N
        forward_runs = runs if -(-N // bc) < forward_below else 0  # 0: in threads, a block of channels a program
        small_backward = -(-N // bc) < backward_below
        runs = scan_time_last._m2_segments(N, DEVICE, scan_time_last.M2_BACKWARD_WARPS_PER_SM)
        # a small grid's backward has 2 runs or more with one channel a program (the GPU's tile; the interpreter's
        # two channels a program leave it one run near the threshold: a warp a row, one channel a program)
        assert runs > 1 or not small_backward or bc > 1, N
        backward_runs = runs if small_backward else 0
        assert forward["SEGMENTS"] == max(forward_runs, 1) and backward["SEGMENTS"] == max(backward_runs, 1), N
        for options in (forward, backward):
            assert "PREFETCH" not in options and "IN_THREADS" not in options
        assert "PREFETCH" not in first_order and "IN_THREADS" not in first_order
        assert forward["STAGES"] == first_order["STAGES"] == scan_time_last.FORWARD_STAGES and "STAGES" not in backward
        for options, row_runs in ((forward, forward_runs), (backward, backward_runs)):
            assert (options["BC"] == 1) if row_runs else options["BC"] == bc
        assert grid == (-(-N // forward["BC"]),)
        if GPU:
            for options, row_runs in ((forward, forward_runs), (backward, backward_runs)):
                tile = dict(scan_time_last.IN_THREADS_TILE)
                if row_runs:
                    tile.update(BC=1, num_warps=row_runs)
                assert {k: options[k] for k in tile} == tile


@needs_triton
def test_the_forwards_pipeline_fits_its_shared_memory_budget(monkeypatch):
    """`_grid` with the GPU's tiles (the rule alone: nothing launches) for every forward, grid size and input width:
    the pipeline's buffers (FORWARD_STAGES - 1 tiles of the logits and values) stay within PIPELINE_SHARED_BYTES, and
    a forward goes unpipelined only where they would not (BD-LRU block size 2 then prefetching in registers, as it
    does on grids of BD2_REGISTER_PREFETCH_FROM programs per SM and more)."""
    monkeypatch.setattr(scan_time_last, "_INTERPRET", False)
    stages, budget = scan_time_last.FORWARD_STAGES, scan_time_last.PIPELINE_SHARED_BYTES
    seen = set()
    for blocked, order, rows_loaded in ((False, 1, 3), (False, 2, 4), (False, 4, 6), (True, 2, 8), (True, 4, 24)):
        for B, N in ((1, 1), (1, 40), (1, 256), (2, 512), (8, 512), (32, 1024)):
            for itemsize in (2, 4, 8):
                grid, options = scan_time_last._grid(B, N, 4096, DEVICE, order=order, blocked=blocked,
                                                     itemsize=itemsize)
                buffers = (stages - 1) * rows_loaded * options["BC"] * options.get("SEGMENTS", 1) * options["BT"] \
                    * itemsize
                large = grid[0] >= scan_time_last.BD2_REGISTER_PREFETCH_FROM * scan_time_last._num_sms(DEVICE)
                if blocked and order == 2:
                    assert options["PREFETCH"] is (buffers > budget or large), (order, B, N, itemsize)
                    assert options["STAGES"] == (1 if options["PREFETCH"] else stages)
                else:
                    assert options["STAGES"] == (stages if buffers <= budget else 1), (order, B, N, itemsize)
                seen.add((options["STAGES"], itemsize))
    assert {(stages, 2), (1, 8)} <= seen  # bfloat16 pipelined, and the budget binding in float64


@needs_triton
@pytest.mark.parametrize("warps_per_sm", ["M2_WARPS_PER_SM", "M2_BACKWARD_WARPS_PER_SM"])
def test_the_number_of_segments_brings_a_small_grid_near_its_warps_per_sm(warps_per_sm):
    """`_m2_segments`: the largest power of two s <= M2_MOST_SEGMENTS with rows * s <= warps_per_sm * SMs (1 where
    even one warp a row exceeds that), for every grid size, at the forward's and the backward's warps per SM."""
    sms, most = scan_time_last._num_sms(DEVICE), scan_time_last.M2_MOST_SEGMENTS
    warps_per_sm = getattr(scan_time_last, warps_per_sm)
    budget = warps_per_sm * sms
    seen = set()
    for rows in range(1, 2 * budget, 37):
        s = scan_time_last._m2_segments(rows, DEVICE, warps_per_sm)
        seen.add(s)
        assert s & (s - 1) == 0 and 1 <= s <= most
        assert rows * s <= budget or s == 1
        assert s == most or rows * 2 * s > budget
    assert seen == {2 ** k for k in range(most.bit_length())}  # every count from 1 to the most was chosen


@needs_triton
@pytest.mark.parametrize("num_warps,most", [(1, None), (2, None), (2, 128)])
def test_the_backward_register_cap_keeps_the_grid_in_one_wave(num_warps, most):
    """`_backward_register_cap`: where a cap of MIN_BACKWARD_REGISTERS or more keeps every program resident at once,
    it is the largest such multiple of 8 (8 more would need a second wave), bounded by `most`; elsewhere (grids of
    many waves, or so small that any count fits) it is `most`. On the GPU, `_grid` passes it to in-thread backwards
    only, never to forwards."""
    sms, registers = scan_time_last._num_sms(DEVICE), scan_time_last.REGISTERS_PER_SM
    seen = set()
    for programs in range(1, 60 * sms, 7):
        cap = scan_time_last._backward_register_cap(programs, num_warps, DEVICE, most=most)
        per_sm = -(-programs // sms)
        if cap is None or cap == most:
            fits = [r for r in range(scan_time_last.MIN_BACKWARD_REGISTERS, 256, 8)
                    if registers // (32 * num_warps * r) >= per_sm]
            assert not fits or fits[-1] == 248 or (most is not None and fits[-1] >= most), (programs, fits)
        else:
            assert cap % 8 == 0 and scan_time_last.MIN_BACKWARD_REGISTERS <= cap < 256
            assert registers // (32 * num_warps * cap) >= per_sm > registers // (32 * num_warps * (cap + 8))
            assert most is None or cap <= most
        seen.add(cap)
    assert len(seen) > 3  # the sweep crossed grids with and without a one-wave cap
    if GPU:
        in_threads_programs = 8 * 512  # B8 N512 (D1024 at m = 2): 32 programs per SM on 132 SMs
        for order, backward in ((2, False), (2, True), (4, False), (4, True)):
            _, options = scan_time_last._grid(8, 512, 4096, DEVICE, backward=backward, order=order)
            assert ("maxnreg" in options) is backward, (order, backward, options)
        assert "maxnreg" not in scan_time_last._grid(1, in_threads_programs, 4096, DEVICE, True, order=1)[1]


@needs_triton
@pytest.mark.parametrize("activation", ["softmax", "relu"])
@pytest.mark.parametrize("T,with_h0,with_starts", [(50, True, True), (37, False, False), (33, True, False),
                                                   (16, True, True), (1, True, False), (17, False, True)])
def test_order_2_forward_in_threads_matches_the_reference(activation, T, with_h0, with_starts, monkeypatch):
    """m = 2's forward with its steps composed 8 at a time inside threads, a warp a row (grids that are not small)
    against the float64 reference: states and final window over several 16-step tiles (2 groups of 8 each), a
    partial last tile, a last tile of one step (T = 17, 33: the final window's second entry is the tile before's),
    document starts (one at the last step), an initial window."""
    _small_grid_below(monkeypatch, 0)
    assert scan_time_last._grid(2, 3, T, DEVICE, order=2)[1]["SEGMENTS"] == 1
    gates, values, h0 = (t.detach() if t is not None else None for t in _inputs(2, 3, T, with_h0=with_h0, seed=T, m=2))
    starts = None
    if with_starts:
        starts = torch.zeros(2, T, dtype=torch.bool, device=DEVICE)
        starts[0, T // 3] = starts[1, T - 1] = starts[1, 0] = True
    want = hlru_scan_time_last(gates, values, h0, activation, True, backend="torch", document_starts=starts)
    got = hlru_scan_time_last(gates, values, h0, activation, True, backend="triton", document_starts=starts)
    for g, w in zip(got, want):
        torch.testing.assert_close(g.to(w.dtype), w, rtol=0, atol=5e-6)


@needs_triton
@pytest.mark.parametrize("activation", ["softmax", "relu"])
@pytest.mark.parametrize("T,with_h0,with_starts", [(50, True, True), (37, False, False), (33, True, False),
                                                   (16, True, True), (1, True, False), (17, False, True),
                                                   (2, True, True)])
def test_order_2_backward_in_threads_matches_the_reference(activation, T, with_h0, with_starts, monkeypatch):
    """m = 2's backward with its adjoints composed 8 steps at a time inside threads, a warp a row (grids that are
    not small), and the forward likewise: the gradients of gates, values and initial window (a loss on every
    step and on the final window) against the float64 reference, over several tiles, a partial last tile, a last
    tile of one step, document starts (one at the last step), T = 1 and 2."""
    _small_grid_below(monkeypatch, 0)
    assert scan_time_last._grid(2, 3, T, DEVICE, backward=True, order=2)[1]["SEGMENTS"] == 1
    inputs = _inputs(2, 3, T, with_h0=with_h0, seed=T + 1, m=2)
    starts = None
    if with_starts:
        starts = torch.zeros(2, T, dtype=torch.bool, device=DEVICE)
        starts[0, T // 3] = starts[1, T - 1] = starts[1, 0] = True
    want = _run("torch", *inputs, activation, True, starts)
    got = _run("triton", *inputs, activation, True, starts)
    for g, w in zip(got, want):
        if w is None:
            assert g is None
            continue
        scale = w.abs().max().clamp(min=1.0)  # float32 arithmetic: relative to the largest entry
        torch.testing.assert_close(g.to(w.dtype) / scale, w / scale, rtol=0, atol=5e-6)


@needs_triton
def test_bfloat16_inputs_give_bfloat16_outputs_and_gradients_close_to_float32():
    gates, values, h0 = _inputs(2, 6, 40, dtype=torch.bfloat16)
    states, final, d_gates, d_values, d_h0 = _run("triton", gates, values, h0, "softmax", True)
    assert states.dtype == d_values.dtype == d_gates.dtype == torch.bfloat16
    assert final.dtype == torch.float32 and d_h0.dtype == torch.bfloat16
    reference = _run("torch", *[t.detach().float().requires_grad_() for t in (gates, values, h0)], "softmax", True)
    for got, want in zip((states, final, d_gates, d_values, d_h0), reference):
        torch.testing.assert_close(got.float(), want.float(), rtol=2e-2, atol=2e-2)


@needs_triton
@pytest.mark.parametrize("m", [1, 2, 4])
@pytest.mark.parametrize("T", [0, 1, 2, 3])
def test_empty_and_single_step_sequences(T, m):
    """T = 0: no states, the final state is the initial one (its gradient passes through); T = 1: one step; T < m:
    the final window reaches back into the initial one (its gradient too)."""
    gates, values, h0 = _inputs(2, 3, T, m=m)
    got = _run("triton", gates, values, h0, "softmax", True)
    want = _run("torch", gates, values, h0, "softmax", True)
    for g, w in zip(got, want):
        torch.testing.assert_close(g.to(w.dtype), w, rtol=1e-6, atol=1e-6)


def test_bad_inputs_name_the_argument():
    gates, values, h0 = (t.detach() for t in _inputs(2, 3, 8))
    with pytest.raises(ValueError, match=r"gates must have shape \[B, N, m\+1, T\] with m = 1, 2 or 4"):
        hlru_scan_time_last(torch.zeros(2, 3, 4, 8, dtype=torch.float64, device=DEVICE), values)
    with pytest.raises(ValueError, match=r"values must have shape \[B, N, T\] = \(2, 3, 8\)"):
        hlru_scan_time_last(gates, values[..., :7])
    with pytest.raises(ValueError, match=r"initial_state must be None or a floating tensor \[B, N, m\] = \(2, 3, 1\)"):
        hlru_scan_time_last(gates, values, h0[:, :2])
    with pytest.raises(ValueError, match="gate_activation must be one of"):
        hlru_scan_time_last(gates, values, gate_activation="gelu")
    with pytest.raises(ValueError, match="output_final_state must be True or False"):
        hlru_scan_time_last(gates, values, output_final_state=1)
    with pytest.raises(ValueError, match="values must be float32, bfloat16, float16 or float64"):
        hlru_scan_time_last(gates, values.long())
    with pytest.raises(ValueError, match="output_window must be True or False"):
        hlru_scan_time_last(gates, values, output_window=None)
    with pytest.raises(ValueError, match=r"gate_bias must be None or a floating tensor \[N, m\+1\] = \(3, 2\)"):
        hlru_scan_time_last(gates, values, gate_bias=torch.zeros(3, 3, dtype=torch.float64, device=DEVICE))


@needs_triton
def test_fullgraph_compile_traces_the_custom_op():
    """torch.compile(fullgraph=True) sees one opaque op forward and backward (no graph break), same results; with
    a gate bias, and with the window as output."""
    torch._dynamo.reset()
    gates, values, h0 = _inputs(2, 3, 20, dtype=torch.float32, m=2)
    bias = torch.randn(3, 3, device=DEVICE, requires_grad=True)

    def loss(g, v, h, bias):
        states, final = hlru_scan_time_last(g, v, h, "sigmoid", True, backend="triton", gate_bias=bias)
        window, _ = hlru_scan_time_last(g, v, h, "sigmoid", backend="triton", gate_bias=bias, output_window=True)
        return states.square().sum() + final.sum() + window.sin().sum()

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    eager_grads = torch.autograd.grad(loss(gates, values, h0, bias), [gates, values, h0, bias])
    compiled_grads = torch.autograd.grad(compiled(gates, values, h0, bias), [gates, values, h0, bias])
    for got, want in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


@needs_triton
@pytest.mark.parametrize("m", [1, 2, 4])
def test_eager_calls_take_the_autograd_function_and_equal_the_custom_op(m, monkeypatch):
    """Eagerly the scan runs through scan_time_last's autograd Function, not the custom op (which torch.compile
    traces), as hlru_scan does; both give the same states, final window and gradients."""
    from hf_lrnn import ops

    gates, values, h0 = _inputs(2, 3, 21, dtype=torch.float32, m=m)
    bias = torch.randn(3, m + 1, device=DEVICE, requires_grad=True)
    op = ops.hlru_scan_time_last_op
    states, final = op(gates, values, h0, "softmax", True, None, bias, m == 2)  # the window at m = 2
    loss = states.square().sum() + final.sum()
    want = (states, final) + torch.autograd.grad(loss, [gates, values, h0, bias])

    def refuse(*args):
        raise AssertionError("the eager path dispatched the custom op")

    monkeypatch.setattr(ops, "hlru_scan_time_last_op", refuse)
    states, final = hlru_scan_time_last(gates, values, h0, "softmax", True, backend="triton", gate_bias=bias,
                                        output_window=m == 2)
    loss = states.square().sum() + final.sum()
    got = (states, final) + torch.autograd.grad(loss, [gates, values, h0, bias])
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=0)


@needs_triton
@pytest.mark.parametrize("m", [1, 2, 4])
def test_gradients_of_only_some_inputs_and_of_the_final_window_alone(m):
    """A loss on the final window alone (no gradient reaches the states), inputs of which only some require
    gradients, and no gradient tracking at all: the Function's paths against the reference."""
    gates, values, h0 = _inputs(2, 3, 19, m=m)
    for backend in ("torch", "triton"):
        _, final = hlru_scan_time_last(gates, values, h0, "softmax", True, backend=backend)
        grads = torch.autograd.grad(final.double().sum(), [gates, values, h0])
        if backend == "torch":
            want = grads
    for g, w in zip(grads, want):
        torch.testing.assert_close(g, w, rtol=0, atol=5e-6)
    frozen_gates = gates.detach()
    states, _ = hlru_scan_time_last(frozen_gates, values, None, "softmax", False, backend="triton")
    (d_values,) = torch.autograd.grad(states.sum(), [values])
    states_ref, _ = hlru_scan_time_last(frozen_gates, values, None, "softmax", False, backend="torch")
    (d_values_ref,) = torch.autograd.grad(states_ref.sum(), [values])
    torch.testing.assert_close(d_values, d_values_ref, rtol=0, atol=5e-6)
    with torch.no_grad():
        states, _ = hlru_scan_time_last(gates, values, h0, "softmax", False, backend="triton")
    assert states.grad_fn is None and not states.requires_grad


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="needs CUDA")
@pytest.mark.parametrize("B,N,T", [(2, 70, 5000), (1, 3, 20000)])
@pytest.mark.parametrize("small_grid", [False, True])
def test_gpu_default_tiles_match_the_float64_reference(B, N, T, small_grid, monkeypatch):
    """m = 1 on the GPU's 1024-step tiles over several tiles (and a partial one), float64 inputs, forward and
    gradients, with the grid counted small and not (nothing of m = 1's launch depends on it now; it did)."""
    _small_grid_below(monkeypatch, 10**9 if small_grid else 0)
    assert scan_time_last._grid(B, N, T, DEVICE, order=1)[1]["STAGES"] == scan_time_last.FORWARD_STAGES
    inputs = _inputs(B, N, T, seed=T, m=1)
    reference = _run("torch", *inputs, "softmax", True)
    for got, want in zip(_run("triton", *inputs, "softmax", True), reference):
        torch.testing.assert_close(got.to(want.dtype), want, rtol=1e-5, atol=1e-5)


def _assert_gpu_run_matches_the_reference(inputs, activation, starts):
    """States, final window and every gradient of (gates, values, initial window) against the float64 reference,
    without and with the document starts, relative to each output's largest magnitude."""
    for document_starts in (None, starts):
        want = _run("torch", *inputs, activation, True, document_starts)
        got = _run("triton", *inputs, activation, True, document_starts)
        for g, w in zip(got, want):
            scale = w.abs().max().clamp(min=1.0)
            torch.testing.assert_close(g.to(w.dtype) / scale, w / scale, rtol=0, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="needs CUDA")
@pytest.mark.parametrize("segments", [2, 4, 8])
@pytest.mark.parametrize("B,N,T", [(2, 70, 5000), (1, 3, 20000)])
def test_gpu_order_2_in_segments_matches_the_float64_reference(B, N, T, segments, monkeypatch):
    """m = 2's forward and backward in segments of a row (M2_SEGMENTS runs of IN_THREADS_TILE's 256 steps, a warp
    each) over many tiles, with an initial window and document starts: states, final window and every gradient
    against the float64 reference."""
    _in_segments(monkeypatch, 2, segments)
    for backward in (False, True):
        options = scan_time_last._grid(B, N, T, DEVICE, backward=backward, order=2)[1]
        assert options["SEGMENTS"] == options["num_warps"] == segments
        assert options["BT"] == scan_time_last.IN_THREADS_TILE["BT"]
    inputs = _inputs(B, N, T, seed=T + segments, m=2)
    starts = torch.rand(B, T, generator=torch.Generator().manual_seed(3)).lt(0.002).to(DEVICE)
    starts[0, 256 * segments] = starts[-1, 256] = True  # at a tile's and at a run's first step
    _assert_gpu_run_matches_the_reference(inputs, "softmax", starts)


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="needs CUDA")
@pytest.mark.parametrize("segments", [2, 4, 8])
@pytest.mark.parametrize("B,N,T", [(2, 70, 5000), (1, 3, 20000)])
def test_gpu_order_4_forward_in_segments_matches_the_float64_reference(B, N, T, segments, monkeypatch):
    """H-LRU m = 4's forward in segments of a row (M4_SEGMENTS: runs of M4_TILE's 256 steps, a warp each) over many
    tiles, software-pipelined, with an initial window and document starts: states, final window and every gradient
    (the backward's chunks) against the float64 reference."""
    _in_segments(monkeypatch, 4, segments)
    options = scan_time_last._grid(B, N, T, DEVICE, order=4)[1]
    assert options["SEGMENTS"] == options["num_warps"] == segments and options["BT"] == scan_time_last.M4_TILE["BT"]
    inputs = _inputs(B, N, T, seed=T + segments, m=4)
    starts = torch.rand(B, T, generator=torch.Generator().manual_seed(3)).lt(0.002).to(DEVICE)
    starts[0, 256 * segments] = starts[-1, 256] = True  # at a tile's and at a run's first step
    _assert_gpu_run_matches_the_reference(inputs, "softmax", starts)


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="needs CUDA")
@pytest.mark.parametrize("B,N,T", [(2, 70, 5000), (1, 3, 20000)])
def test_gpu_order_2_in_threads_matches_the_float64_reference(B, N, T, monkeypatch):
    """m = 2's forward and backward composed in threads, a warp a row (IN_THREADS_TILE on a GPU) over many tiles,
    with an initial window and document starts: states, final window and every gradient against the float64
    reference."""
    _small_grid_below(monkeypatch, 0)
    assert scan_time_last._grid(B, N, T, DEVICE, order=2)[1]["BT"] == scan_time_last.IN_THREADS_TILE["BT"]
    inputs = _inputs(B, N, T, seed=T, m=2)
    starts = torch.rand(B, T, generator=torch.Generator().manual_seed(1)).lt(0.002).to(DEVICE)
    _assert_gpu_run_matches_the_reference(inputs, "softmax", starts)


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="needs CUDA")
@pytest.mark.parametrize("B,N,T", [(2, 70, 5000), (1, 3, 20000)])
@pytest.mark.parametrize("activation", ["softmax", "relu"])
@pytest.mark.parametrize("mode", ["rows", "chunks", "chunks-composing-maps"])
def test_gpu_order_4_matches_the_float64_reference(B, N, T, activation, mode, monkeypatch):
    """m = 4 on the GPU's tiles (M4_TILE: 2 channels a program, 256 steps) over many tiles, whole rows or chunks of
    a tile joined by the look-back (every chunk's carry published, or every fifth's), with an initial window, with
    and without document starts: states, final window and every gradient against the float64 reference."""
    monkeypatch.setattr(scan_time_last, "M4_CHUNKED_BELOW", 0 if mode == "rows" else 10**9)
    monkeypatch.setattr(scan_time_last, "M4_SEGMENTS", False)  # the forward's chunks too, not its segments
    monkeypatch.setattr(scan_time_last, "_PREFIX_EVERY", 5 if mode == "chunks-composing-maps" else 1)
    options = scan_time_last._grid(B, N, T, DEVICE, order=4)[1]
    assert options["BT"] == scan_time_last.M4_TILE["BT"] and options["CHUNKED"] is (mode != "rows")
    inputs = _inputs(B, N, T, seed=T + 4, m=4)
    starts = torch.rand(B, T, generator=torch.Generator().manual_seed(5)).lt(0.002).to(DEVICE)
    _assert_gpu_run_matches_the_reference(inputs, activation, starts)


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="needs CUDA")
@pytest.mark.parametrize("m,path", M_AND_PATH)
@pytest.mark.parametrize("B,N,T", [(2, 70, 5000), (1, 3, 20000)])
def test_gpu_window_and_gate_bias_match_the_float64_reference(B, N, T, m, path, monkeypatch):
    """The window output and the gate bias on the GPU's tiles on every launch path (PATHS) over many tiles, with an
    initial window and document starts: window, final window and every gradient, the bias's included, against the
    float64 reference."""
    _take_path(monkeypatch, path)
    gates, values, h0 = _inputs(B, N, T, seed=T + m, m=m)
    bias = torch.randn(N, m + 1, dtype=torch.float64, generator=torch.Generator().manual_seed(2)).to(DEVICE)
    bias.requires_grad_()
    starts = torch.rand(B, T, generator=torch.Generator().manual_seed(3)).lt(0.002).to(DEVICE)
    weights = torch.randn(m, T, dtype=torch.float64, generator=torch.Generator().manual_seed(4)).to(DEVICE)
    results = []
    for backend in ("torch", "triton"):
        window, final = hlru_scan_time_last(gates, values, h0, "softmax", True, backend=backend,
                                            document_starts=starts, gate_bias=bias, output_window=True)
        loss = (window * weights).sum() + 0.3 * final.sum()
        results.append((window, final) + torch.autograd.grad(loss, (gates, values, h0, bias)))
    for got, want in zip(results[1], results[0]):
        scale = want.abs().max().clamp(min=1.0)
        torch.testing.assert_close(got.to(want.dtype) / scale, want / scale, rtol=0, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="needs CUDA")
@pytest.mark.parametrize("m,register_cap", [(2, 64), (2, 80), (4, 96)])
def test_gpu_backward_under_a_register_cap_matches_the_float64_reference(m, register_cap, monkeypatch):
    """The in-thread backwards under the register caps `_grid` gives one-wave grids (`maxnreg`; these small grids
    would get none at m = 2), with the model's options (gate bias, window output, document starts, initial window):
    every gradient against the float64 reference, however many registers spill."""
    _small_grid_below(monkeypatch, 0)
    monkeypatch.setattr(scan_time_last, "_backward_register_cap", lambda *a, **k: register_cap)
    B, N, T = 2, 70, 5000
    gates, values, h0 = _inputs(B, N, T, seed=T + m + register_cap, m=m)
    bias = torch.randn(N, m + 1, dtype=torch.float64, generator=torch.Generator().manual_seed(2)).to(DEVICE)
    bias.requires_grad_()
    starts = torch.rand(B, T, generator=torch.Generator().manual_seed(3)).lt(0.002).to(DEVICE)
    assert scan_time_last._grid(B, N, T, DEVICE, backward=True, order=m)[1]["maxnreg"] == register_cap
    weights = torch.randn(m, T, dtype=torch.float64, generator=torch.Generator().manual_seed(4)).to(DEVICE)
    results = []
    for backend in ("torch", "triton"):
        window, final = hlru_scan_time_last(gates, values, h0, "softmax", True, backend=backend,
                                            document_starts=starts, gate_bias=bias, output_window=True)
        loss = (window * weights).sum() + 0.3 * final.sum()
        results.append(torch.autograd.grad(loss, (gates, values, h0, bias)))
    for got, want in zip(results[1], results[0]):
        scale = want.abs().max().clamp(min=1.0)
        torch.testing.assert_close(got.to(want.dtype) / scale, want / scale, rtol=0, atol=1e-5)


MODEL_CONFIGS = {
    "hlru-1": lambda **k: __import__("hf_lrnn").HLRUConfig(order=1, **k),
    "hlru-2-tanh": lambda **k: __import__("hf_lrnn").HLRUConfig(order=2, gate_activation="tanh", **k),
    "hlru-4": lambda **k: __import__("hf_lrnn").HLRUConfig(order=4, **k),
    "bdlru-1-sigmoid": lambda **k: __import__("hf_lrnn").BDLRUConfig(block_size=1, gate_activation="sigmoid", **k),
    "bdlru-2": lambda **k: __import__("hf_lrnn").BDLRUConfig(block_size=2, **k),
    "bdlru-4-tanh": lambda **k: __import__("hf_lrnn").BDLRUConfig(block_size=4, gate_activation="tanh", **k),
}


def _model_pair(name):
    """The same float64 model twice on the Triton backend, scan_layout "time_first" and "time_last"."""
    from transformers import AutoModelForCausalLM

    models = []
    for layout in ("time_first", "time_last"):
        config = MODEL_CONFIGS[name](vocab_size=64, hidden_size=24, num_hidden_layers=2, intermediate_size=32,
                                     scan_backend="triton", scan_layout=layout)
        torch.manual_seed(0)
        models.append(AutoModelForCausalLM.from_config(config).to(DEVICE, torch.float64))
    return models


def _counting(monkeypatch):
    """Count the models' time-last scans."""
    from hf_lrnn import modeling_lrnn

    calls = []
    for name in ("hlru_scan_time_last", "bdlru_scan_time_last"):
        scan = getattr(modeling_lrnn, name)
        monkeypatch.setattr(modeling_lrnn, name, lambda *a, scan=scan, **k: calls.append(1) or scan(*a, **k))
    return calls


@needs_triton
@pytest.mark.parametrize("chunked", [False, True])
def test_order_4_models_scan_time_last_on_every_grid(chunked, monkeypatch):
    """H-LRU order 4 scans time-last whatever the grid (small grids: the forward in segments of a row, the backward
    in chunks joined by the look-back; larger ones in whole rows): a model on a tiny grid takes the time-last scan in
    every layer, with the time-first model's logits and gradients."""
    monkeypatch.setattr(scan_time_last, "M4_CHUNKED_BELOW", 10**9 if chunked else 0)
    first, last = _model_pair("hlru-4")
    calls = _counting(monkeypatch)
    T = 300 if GPU else 37  # several of the GPU's 256-step tiles, of the interpreter's 16-step ones
    ids = torch.randint(3, 60, (2, T), device=DEVICE)
    N = last.config.hidden_size // 4
    forward = scan_time_last._grid(2, N, T, DEVICE, order=4)[1]
    assert scan_time_last._grid(2, N, T, DEVICE, backward=True, order=4)[1]["CHUNKED"] is chunked
    assert (forward["SEGMENTS"] > 1) is chunked and forward["CHUNKED"] is False
    assert_same_training_step(last, first, logits_tol=(1e-6, 1e-6), grad_tol=(1e-5, 1e-6), input_ids=ids,
                              labels=ids)
    assert len(calls) == last.config.num_hidden_layers


def test_time_last_projections_match_linear_and_write_gradients_in_their_consumers_layout():
    """The time-last mixer's projections: gradcheck in float64; forward and gradients equal to nn.Linear's on the
    transposed tensors; the input's gradient comes back as a contiguous [B, T, d] and the read-out's as a contiguous
    [B, K, T] (what the norm before and the time-last scan after read), not as transposed views."""
    from hf_lrnn.modeling_lrnn import _TimeLastInputProjection, _TimeLastOutputProjection

    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 7, 5, dtype=torch.float64, generator=g, requires_grad=True)  # [B, T, d]
    w_in = torch.randn(4, 5, dtype=torch.float64, generator=g, requires_grad=True)  # [R, d]
    readout = torch.randn(3, 4, 7, dtype=torch.float64, generator=g, requires_grad=True)  # [B, K, T]
    w_out = torch.randn(5, 4, dtype=torch.float64, generator=g, requires_grad=True)  # [d, K]
    assert torch.autograd.gradcheck(_TimeLastInputProjection.apply, (x, w_in))
    assert torch.autograd.gradcheck(_TimeLastOutputProjection.apply, (readout, w_out))
    projected = _TimeLastInputProjection.apply(x, w_in)
    torch.testing.assert_close(projected, F.linear(x, w_in).transpose(1, 2), rtol=0, atol=1e-12)
    out = _TimeLastOutputProjection.apply(readout, w_out)
    torch.testing.assert_close(out, F.linear(readout.transpose(1, 2), w_out), rtol=0, atol=1e-12)
    grad_projected, grad_out = torch.randn_like(projected), torch.randn_like(out)
    got = torch.autograd.grad((projected * grad_projected).sum() + (out * grad_out).sum(), (x, w_in, readout, w_out))
    want = torch.autograd.grad((F.linear(x, w_in).transpose(1, 2) * grad_projected).sum()
                               + (F.linear(readout.transpose(1, 2), w_out) * grad_out).sum(), (x, w_in, readout, w_out))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    grad_x, _, grad_readout, _ = got
    assert grad_x.shape == (3, 7, 5) and grad_x.is_contiguous()
    assert grad_readout.shape == (3, 4, 7) and grad_readout.is_contiguous()


@needs_triton
@pytest.mark.parametrize("name", list(MODEL_CONFIGS))
def test_models_with_time_last_scans_equal_time_first(name, monkeypatch):
    """A training forward and backward: loss, logits and every parameter's gradient as with the [B, T, N] path, to
    float64 rounding; the time-last scan ran once per layer."""
    first, last = _model_pair(name)
    calls = _counting(monkeypatch)
    ids = torch.randint(3, 60, (2, 21), device=DEVICE)
    assert_same_training_step(last, first, logits_tol=(1e-6, 1e-6), grad_tol=(1e-5, 1e-6), input_ids=ids,
                              labels=ids, attention_mask=torch.ones_like(ids))
    assert len(calls) == first.config.num_hidden_layers


@needs_triton
@pytest.mark.parametrize("name", ["hlru-1", "hlru-2-tanh", "hlru-4", "bdlru-2", "bdlru-4-tanh"])
def test_time_last_prefill_continues_a_cache_and_padding_keeps_time_first(name, monkeypatch):
    """A prefill in two pieces through the cache (the second starts from the first's state: at m = 2 its read-out
    window reaches back into it) and greedy generation give what the time-first model gives; a left-padded batch
    takes the time-first path."""
    first, last = _model_pair(name)
    calls = _counting(monkeypatch)
    ids = torch.randint(3, 60, (2, 12), device=DEVICE)
    with torch.no_grad():
        cache_first = first(ids[:, :7], use_cache=True).past_key_values
        cache_last = last(ids[:, :7], use_cache=True).past_key_values
        logits_first = first(ids[:, 7:], cache=cache_first, use_cache=True).logits
        logits_last = last(ids[:, 7:], cache=cache_last, use_cache=True).logits
    assert len(calls) == 2 * last.config.num_hidden_layers
    torch.testing.assert_close(logits_last, logits_first, rtol=1e-6, atol=1e-6)
    kw = dict(max_new_tokens=5, do_sample=False, pad_token_id=0, decode_graph=False)
    assert torch.equal(last.generate(ids, **kw), first.generate(ids, **kw))
    calls.clear()
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    with torch.no_grad():
        padded_last = last(ids, attention_mask=mask).logits
        padded_first = first(ids, attention_mask=mask).logits
    assert not calls
    torch.testing.assert_close(padded_last, padded_first, rtol=1e-6, atol=1e-6)


@needs_triton
@pytest.mark.parametrize("name", ["hlru-1", "bdlru-2", "bdlru-4-tanh"])
def test_time_last_under_bfloat16_autocast_matches_time_first(name, monkeypatch):
    """float32 weights under bfloat16 autocast (how the training script runs): the projections and the scan in
    bfloat16 as in the time-first path; losses and gradients within bfloat16 rounding."""
    first, last = (model.float() for model in _model_pair(name))
    calls = _counting(monkeypatch)
    ids = torch.randint(3, 60, (2, 33), device=DEVICE)
    losses = []
    for model in (first, last):
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            loss = model(ids, labels=ids).loss
        loss.backward()
        losses.append(loss)
    assert len(calls) == last.config.num_hidden_layers
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-2, atol=1e-2)
    for p_first, p_last in zip(first.parameters(), last.parameters()):
        torch.testing.assert_close(p_last.grad, p_first.grad, rtol=5e-2, atol=5e-3)


@needs_triton
@pytest.mark.parametrize("name", ["hlru-2-tanh", "bdlru-2", "bdlru-4-tanh"])
def test_a_time_last_model_traces_in_one_graph(name, monkeypatch):
    """torch.compile(fullgraph=True) of a training step of a time-last model (as train.py --torch_compile runs it):
    no graph break, the time-last op in the graph, the same loss and gradients as eager."""
    torch._dynamo.reset()
    _, model = _model_pair(name)
    calls = _counting(monkeypatch)
    ids = torch.randint(3, 60, (2, 19), device=DEVICE)
    eager_loss = model(ids, labels=ids).loss
    eager_grads = torch.autograd.grad(eager_loss, list(model.parameters()))
    assert len(calls) == model.config.num_hidden_layers
    compiled = torch.compile(lambda i: model(i, labels=i).loss, fullgraph=True, backend="aot_eager")
    loss = compiled(ids)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    torch.testing.assert_close(loss, eager_loss, rtol=1e-9, atol=1e-9)
    # under torch.compile the norms are torch's (float64 here), eagerly Triton's (float32 statistics)
    for got, want in zip(grads, eager_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def _document_starts(B, T, seed):
    """[B, T] bool starts: row 0 starts documents at 0, 5, 6 (a one-step document) and T-1; row 1 has no start at 0
    (it continues the initial window) and starts at 9; further rows random."""
    generator = torch.Generator().manual_seed(seed)
    starts = torch.rand(B, T, generator=generator) < 0.15
    starts[0] = False
    starts[0, [0, 5, 6, T - 1]] = True
    if B > 1:
        starts[1] = False
        starts[1, 9] = True
    return starts.to(DEVICE)


@pytest.mark.parametrize("m", [1, 2, 4])
def test_the_reference_with_document_starts_scans_each_document_alone(m):
    """Restarts on the torch backend: every document of a row (cut where document_starts is True) gives the states
    that hlru_scan gives it alone from a zero window; the part before a row's first start continues the initial
    window."""
    B, N, T = 2, 3, 20
    gates, values, h0 = (t.detach() for t in _inputs(B, N, T, m=m))
    starts = _document_starts(B, T, seed=m)
    states, final = hlru_scan_time_last(gates, values, h0, output_final_state=True, backend="torch",
                                        document_starts=starts)
    for b in range(B):
        cuts = [0] + [t for t in range(1, T) if starts[b, t]] + [T]
        for begin, end in zip(cuts[:-1], cuts[1:]):
            alone, alone_final = hlru_scan_time_last(
                gates[b:b + 1, :, :, begin:end], values[b:b + 1, :, begin:end],
                h0[b:b + 1] if begin == 0 and not starts[b, 0] else None, output_final_state=True, backend="torch")
            torch.testing.assert_close(states[b:b + 1, :, begin:end], alone, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(final[b:b + 1], alone_final, rtol=1e-12, atol=1e-12)


@needs_triton
@pytest.mark.parametrize("m", [1, 2, 4])
@pytest.mark.parametrize("activation", ["softmax", "tanh"])
@pytest.mark.parametrize("with_h0", [False, True])
def test_triton_with_document_starts_matches_the_reference(m, activation, with_h0):
    """Restarts in the kernels, forward and every gradient, over several tiles (T = 37: starts inside tiles, at a
    tile's first step, a one-step document, a start at the last step)."""
    B, N, T = 3, 3, 37
    inputs = _inputs(B, N, T, with_h0=with_h0, seed=7 * m, m=m)
    starts = _document_starts(B, T, seed=m)
    starts[2, 16] = starts[2, 32] = True  # the first step of the second and third interpreter tiles
    reference = _run("torch", *inputs, activation, True, document_starts=starts)
    for got, want in zip(_run("triton", *inputs, activation, True, document_starts=starts), reference):
        if want is None:
            assert got is None
            continue
        torch.testing.assert_close(got.to(want.dtype), want, rtol=1e-5, atol=5e-6)


def test_document_starts_must_be_a_bool_mask_of_the_steps():
    gates, values, _ = (t.detach() if t is not None else None for t in _inputs(2, 3, 8))
    with pytest.raises(ValueError, match=r"document_starts must be None or a bool tensor \[B, T\] = \(2, 8\)"):
        hlru_scan_time_last(gates, values, document_starts=torch.zeros(2, 7, dtype=torch.bool, device=DEVICE))
    with pytest.raises(ValueError, match="document_starts must be None or a bool tensor"):
        hlru_scan_time_last(gates, values, document_starts=torch.zeros(2, 8, device=DEVICE))


@needs_triton
@pytest.mark.parametrize("name", ["hlru-1", "hlru-2-tanh", "hlru-4", "bdlru-2", "bdlru-4-tanh"])
def test_time_last_models_with_packed_documents_equal_time_first(name, monkeypatch):
    """Documents packed in rows (position_ids restarting at 0; the varlen packing of train.py): the time-last path
    runs with the document starts, and loss, logits and every gradient equal the time-first path's (which scans
    every document from a zero window too)."""
    first, last = _model_pair(name)
    calls = _counting(monkeypatch)
    ids = torch.randint(3, 60, (2, 23), device=DEVICE)
    positions = torch.cat([torch.arange(9), torch.arange(1), torch.arange(13)]).repeat(2, 1).to(DEVICE)
    positions[1] = torch.cat([torch.arange(16), torch.arange(7)])
    assert_same_training_step(last, first, logits_tol=(1e-6, 1e-6), grad_tol=(1e-5, 1e-6), input_ids=ids,
                              labels=ids, position_ids=positions)
    assert len(calls) == last.config.num_hidden_layers
