import os, sys, re, torch, triton, triton.language as tl
sys.path.insert(0, "scripts")  # run from the repository root
import compile_check as cc
from triton.backends.compiler import GPUTarget
from triton.runtime import driver
driver.set_active(cc._CompileOnlyDriver(GPUTarget("cuda", 90, 32)))
MODE = sys.argv[1]

@triton.jit
def _load_contiguous(ptr, mask, BLOCK: tl.constexpr, COUNT: tl.constexpr, WIDTH: tl.constexpr, LOG2_WIDTH: tl.constexpr):
    column = tl.arange(0, WIDTH)
    tile = tl.load(ptr[:, None] + column[None, :], mask=mask[:, None] & (column[None, :] < COUNT), other=0.0).to(tl.float32)
    level = (tile,)
    for depth in tl.static_range(LOG2_WIDTH):
        split = ()
        for q in tl.static_range(1 << depth):
            if (WIDTH >> (depth + 1)) == 1:
                a, b = tl.split(tl.reshape(level[q], [BLOCK, 2]))
            else:
                a, b = tl.split(tl.permute(tl.reshape(level[q], [BLOCK, 2, WIDTH >> (depth + 1)]), (0, 2, 1)))
            split = split + (a, b)
        level = split
    out = ()
    for q in tl.static_range(COUNT):
        out = out + (level[q],)
    return out

@triton.jit
def _load_joined(ptr, mask, BLOCK: tl.constexpr, COUNT: tl.constexpr, WIDTH: tl.constexpr, LOG2_WIDTH: tl.constexpr):
    level = ()
    for q in tl.static_range(WIDTH):
        level = level + (ptr + q,)
    mlevel = ()
    for q in tl.static_range(WIDTH):
        mlevel = mlevel + (mask & (q < COUNT),)
    for depth in tl.static_range(LOG2_WIDTH):
        joined = ()
        mjoined = ()
        for q in tl.static_range(WIDTH >> (depth + 1)):
            joined = joined + (tl.reshape(tl.join(level[q], level[q + (WIDTH >> (depth + 1))]), [BLOCK, 2 << depth]),)
            mjoined = mjoined + (tl.reshape(tl.join(mlevel[q], mlevel[q + (WIDTH >> (depth + 1))]), [BLOCK, 2 << depth]),)
        level = joined
        mlevel = mjoined
    tile = tl.load(level[0], mask=mlevel[0], other=0.0).to(tl.float32)
    level = (tile,)
    for depth in tl.static_range(LOG2_WIDTH):
        evens = ()
        odds = ()
        for q in tl.static_range(1 << depth):
            if (WIDTH >> depth) == 2:
                a, b = tl.split(level[q])
            else:
                a, b = tl.split(tl.reshape(level[q], [BLOCK, WIDTH >> (depth + 1), 2]))
            evens = evens + (a,)
            odds = odds + (b,)
        level = evens + odds
    out = ()
    for q in tl.static_range(COUNT):
        out = out + (level[q],)
    return out


@triton.jit
def _load_split(ptr, mask, BLOCK: tl.constexpr, COUNT: tl.constexpr, WIDTH: tl.constexpr, LOG2_WIDTH: tl.constexpr):
    column = tl.arange(0, WIDTH)
    tile = tl.load(ptr[:, None] + column[None, :], mask=mask[:, None] & (column[None, :] < COUNT), other=0.0).to(tl.float32)
    level = (tile,)
    for depth in tl.static_range(LOG2_WIDTH):
        evens = ()
        odds = ()
        for q in tl.static_range(1 << depth):
            if (WIDTH >> depth) == 2:
                a, b = tl.split(level[q])
            else:
                a, b = tl.split(tl.reshape(level[q], [BLOCK, WIDTH >> (depth + 1), 2]))
            evens = evens + (a,)
            odds = odds + (b,)
        level = evens + odds
    out = ()
    for q in tl.static_range(COUNT):
        out = out + (level[q],)
    return out


@triton.jit
def toy(x, y, T, N, BLOCK: tl.constexpr, COUNT: tl.constexpr, WIDTH: tl.constexpr, LOG2_WIDTH: tl.constexpr, VEC: tl.constexpr):
    n = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mn = n < N
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for t in range(T):
        row = x + (t * N + n).to(tl.int64) * COUNT
        if VEC == 2:
            z = _load_joined(row, mn, BLOCK, COUNT, WIDTH, LOG2_WIDTH)
        elif VEC == 3:
            z = _load_split(row, mn, BLOCK, COUNT, WIDTH, LOG2_WIDTH)
        elif VEC == 1:
            z = _load_contiguous(row, mn, BLOCK, COUNT, WIDTH, LOG2_WIDTH)
        else:
            z = ()
            for q in tl.static_range(COUNT):
                z = z + (tl.load(row + q, mask=mn, other=0.0).to(tl.float32),)
        for q in tl.static_range(COUNT):
            acc = acc * 0.5 + z[q] * (q + 1)
    tl.store(y + n, acc, mask=mn)

x = torch.empty(4 * 1024 * 20, dtype=torch.bfloat16); y = torch.empty(1024)
k = toy.warmup(x, y, 4, 1024, BLOCK=64, COUNT=20, WIDTH=32, LOG2_WIDTH=5, VEC={"scalar": 0, "vec": 1, "joined": 2, "split": 3}[MODE], grid=(16,), num_warps=2)
ptx = k.asm["ptx"]
ops = {}
for l in ptx.splitlines():
    l = l.strip()
    m = re.match(r"(@%p\d+\s+)?([a-z]+\.[a-z0-9.]+)", l)
    if m and (m.group(2).startswith(("ld.", "st.", "bar", "shfl", "cvt", "prmt", "mov.b"))):
        key = m.group(2)
        ops[key] = ops.get(key, 0) + 1
print(MODE, sorted(ops.items()))
