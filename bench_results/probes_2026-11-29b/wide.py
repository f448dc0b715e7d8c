# Probe: wide channel tiles (time in-thread) for the scans. Part A: load-pattern copy kernels; B: m=1 production
# kernels with wide tiles; C: ttgir of one wide tile.
import os, sys, json, torch, triton, triton.language as tl
sys.path.insert(0, ".")
from triton.testing import do_bench
from hf_lrnn import scan_triton as st
from hf_lrnn.scan_triton import hlru_scan_triton
OUT = os.environ.get("OUT", "/tmp")
x = torch.empty(512 * 2**20, dtype=torch.uint8, device="cuda"); y = torch.empty_like(x)
copy = 2 * x.numel() / (do_bench(lambda: y.copy_(x)) * 1e-3) / 1e12
del x, y
print(f"copy {copy:.2f} TB/s", flush=True)


@triton.jit
def strided_kernel(gates, values, out, T, N, BT: tl.constexpr, BN: tl.constexpr, M1: tl.constexpr, SCAN: tl.constexpr):
    pid = tl.program_id(0)
    nb = tl.cdiv(N, BN)
    chunk = pid // nb
    n = (pid % nb) * BN + tl.arange(0, BN)
    t = chunk * BT + tl.arange(0, BT)  # flat (b*T + t) rows
    mask = (n < N)[None, :]
    row = t.to(tl.int64)
    acc = tl.load(values + row[:, None] * N + n[None, :], mask=mask, other=0.0).to(tl.float32)
    s = tl.zeros((BT, BN), tl.float32)
    for k in tl.static_range(M1):
        z = tl.load(gates + row[:, None] * (N * M1) + n[None, :] * M1 + k, mask=mask, other=0.0).to(tl.float32)
        s += tl.exp(z)
    r = acc / s
    if SCAN:
        r = tl.cumsum(r, 0)
    tl.store(out + row[:, None] * N + n[None, :], r.to(out.dtype.element_ty), mask=mask)


res = {"copy": copy, "strided": [], "tiles": []}
for M1 in (2, 3, 5):
    for (B, T, D) in [(8, 4096, 1024), (32, 2048, 2048)]:
        N = D
        g = torch.randn(B, T, N, M1, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(B, T, N, device="cuda", dtype=torch.bfloat16)
        o = torch.empty_like(v)
        byt = B * T * N * (M1 + 2) * 2
        line = f"m+1={M1} B{B} T{T} D{D}:"
        for bt, bn, w in [(32, 32, 2), (4, 256, 1), (8, 256, 2), (4, 512, 2), (4, 1024, 4), (8, 1024, 4), (2, 1024, 4), (16, 128, 4), (8, 128, 1)]:
            for scan in (0, 1):
                grid = (B * T // bt * triton.cdiv(N, bn),)
                fn = lambda: strided_kernel[grid](g, v, o, T, N, BT=bt, BN=bn, M1=M1, SCAN=scan, num_warps=w)
                ms = do_bench(fn)
                pct = 100 * byt / (ms * 1e-3) / 1e12 / copy
                res["strided"].append(dict(M1=M1, B=B, T=T, D=D, tile=f"{bt}x{bn}x{w}", scan=scan, ms=ms, pct=pct))
                line += f" {bt}x{bn}x{w}{'s' if scan else ''} {pct:4.0f}%"
        print(line, flush=True)
        del g, v, o
torch.cuda.empty_cache()

for (B, T, D) in [(8, 4096, 1024), (1, 16384, 1024), (32, 2048, 2048)]:
    g = torch.randn(B, T, D, 2, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(B, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    do = torch.randn_like(v)
    tok = B * T * D
    ref = None
    for tile in ["32x32x2", "4x256x1", "8x256x1", "2x256x1", "4x512x2", "8x512x2", "4x1024x4", "2x1024x4", "8x1024x4", "16x256x1", "4x256x2", "8x256x2"]:
        bt, bn, w = (int(q) for q in tile.split("x"))
        st.FIRST_ORDER_TILE.update(BT=bt, BN=bn, num_warps=w)
        try:
            with torch.no_grad():
                out = hlru_scan_triton(g, v, None, "softmax", False, None)[0]
                if ref is None:
                    ref = out.float()
                err = (out.float() - ref).abs().max().item()
                fwd = do_bench(lambda: hlru_scan_triton(g, v, None, "softmax", False, None))
            def fb():
                out, _ = hlru_scan_triton(g, v, None, "softmax", False, None)
                out.backward(do)
            fbt = do_bench(fb, grad_to_none=[g, v])
        except Exception as e:
            print(B, T, D, tile, "FAILED", type(e).__name__, str(e)[:200], flush=True)
            continue
        row = dict(B=B, T=T, D=D, tile=tile, fwd_ms=fwd, fwdbwd_ms=fbt, err=err,
                   fwd_pct=100 * tok * 8 / (fwd * 1e-3) / 1e12 / copy, fb_pct=100 * tok * 22 / (fbt * 1e-3) / 1e12 / copy)
        res["tiles"].append(row)
        print(f"B{B} T{T} D{D} {tile:>9} fwd {fwd*1e3:7.1f}us {row['fwd_pct']:5.1f}%  f+b {fbt*1e3:7.1f}us {row['fb_pct']:5.1f}%  err {err:.1e}", flush=True)
    del g, v, do
    torch.cuda.empty_cache()

for fn in (st._first_order_fwd_kernel, st._first_order_bwd_kernel):
    f = getattr(fn, "fn", fn)
    for dev_cache in fn.device_caches.values():
        for key, k in dev_cache[0].items():
            print(fn.fn.__name__, "regs", k.n_regs, "spills", k.n_spills, "warps", k.metadata.num_warps, flush=True)
            if k.metadata.num_warps == 4 and "ttgir_dumped" not in res:
                pass
# ttgir of the 4x1024x4 forward
st.FIRST_ORDER_TILE.update(BT=4, BN=1024, num_warps=4)
with open(os.path.join(OUT, "ttgir.txt"), "w") as fh:
    for fn in (st._first_order_fwd_kernel,):
        for dev_cache in fn.device_caches.values():
            for key, k in dev_cache[0].items():
                if k.metadata.num_warps == 4:
                    fh.write(k.asm["ttgir"])
                    fh.write("\n\n=====\n\n")
json.dump(res, open(os.path.join(OUT, "wide.json"), "w"), indent=1)
