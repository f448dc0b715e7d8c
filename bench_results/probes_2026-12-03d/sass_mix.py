"""Instructions per element of the time-last kernels, from their SASS for sm_90a, on a machine without a GPU (Triton
3.6 compiles them as scripts/compile_check.py does; the cubin goes through the nvdisasm Triton ships). The ncu
profile of this folder shows the forwards issue-bound (issue slots 70-85 % busy); an H200 issues at most 132 SMs x 4
schedulers x 1.98 GHz x 32 = 33.4 T thread-instructions per second, so at the 4.8 TB/s of HBM a kernel moving E bytes
per element has about 33.4 / 4.8 x E instructions per element to spend.

For each kernel: its registers and spills (`ptxas -v`), the innermost loop that walks time (the largest backward
branch's range), its opcodes and their count, and for the time-last kernels the thread-instructions per element that
count gives (the loop body runs once per tile: R rows x BT steps over the program's threads; the [B, T, N] kernels walk
one step per iteration, so there it is the loop's length). Usage (Triton 3.6, TRITON_INTERPRET unset):

    python3 sass_mix.py [--m 1 2 4] [--blocked] [--small-grid] [--time-first] [--dump DIR]
"""

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path.insert(0, os.path.join(ROOT, "scripts"))
sys.path.insert(0, ROOT)

import compile_check  # noqa: E402
import torch  # noqa: E402
import triton  # noqa: E402

NVDISASM = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "nvdisasm")
PTXAS = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
launches = compile_check.compile_without_launching(90)
scan, _, _, _, time_last = compile_check._load_scan_modules()


def sass_of(kernel):
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(kernel.asm["cubin"])
    text = subprocess.run([NVDISASM, "-c", "-hex", f.name], capture_output=True, text=True, check=True).stdout
    os.unlink(f.name)
    return text


def registers_of(kernel):
    with tempfile.TemporaryDirectory() as folder:
        ptx = os.path.join(folder, "kernel.ptx")
        with open(ptx, "w") as f:
            f.write(kernel.asm["ptx"])
        out = subprocess.run([PTXAS, "-v", "-arch=sm_90a", ptx, "-o", ptx + ".cubin"], capture_output=True, text=True)
    found = re.search(r"Used (\d+) registers", out.stderr)
    spills = re.search(r"(\d+) bytes spill stores", out.stderr)
    return f"{found.group(1) if found else '?'} registers, {spills.group(1) if spills else '?'} bytes spilled"


def loop_body(sass):
    """(opcodes of the largest loop, all instructions): a loop is a BRA to an earlier address."""
    instructions, labels, pending = [], {}, []  # (address, opcode, text); label -> address of what follows it
    for line in sass.splitlines():
        label = re.match(r"\s*(\.L_x_\d+):", line)
        if label:
            pending.append(label.group(1))
            continue
        match = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?);", line)
        if match:
            address, text = int(match.group(1), 16), match.group(2).strip()
            labels.update((name, address) for name in pending)
            pending = []
            opcode = re.sub(r"^@!?U?P\w+\s+", "", text).split()[0]
            instructions.append((address, opcode, text))
    best = None
    for address, opcode, text in instructions:
        if opcode.startswith("BRA"):
            target = re.search(r"\((\.L_x_\d+)\)", text)
            if target and labels.get(target.group(1), address + 1) < address:
                span = (labels[target.group(1)], address)
                if best is None or span[1] - span[0] > best[1] - best[0]:
                    best = span
    if best is None:
        return [], instructions
    return [op for a, op, _ in instructions if best[0] <= a <= best[1]], instructions


def report(tag, dump):
    for name, kernel, kwargs in launches:
        body, everything = loop_body(sass_of(kernel))
        mix = collections.Counter(op.split(".")[0] for op in body)
        top = ", ".join(f"{k} {v}" for k, v in mix.most_common(14))
        line = f"{tag} {name}: {registers_of(kernel)}; {len(everything)} instructions, loop {len(body)}"
        if "time_last" in name or name.startswith("_bd4"):
            R = kwargs.get("BC", 1) * (kwargs.get("SEGMENTS", 1) if isinstance(kwargs.get("SEGMENTS"), int) else 1)
            BT, warps = kwargs.get("BT"), kwargs.get("num_warps", 4)
            block = 4 if name.startswith("_bd4") else 2 if name.startswith("_bd2") else 1  # BD-LRU: channels a row
            line += (f" for {R} x {BT} steps of {block} channel(s) on {warps} warps: "
                     f"{len(body) * 32 * warps / (R * BT * block):.1f} per element")
        else:
            line += " (one step a thread per iteration)"
        print(f"{line}\n    {top}", flush=True)
        if dump:
            os.makedirs(dump, exist_ok=True)
            with open(os.path.join(dump, f"{tag}_{name}.sass"), "w") as f:
                f.write(sass_of(kernel))
    launches.clear()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--m", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--blocked", action="store_true", help="BD-LRU block sizes (2, 4) instead of H-LRU orders")
    ap.add_argument("--small-grid", action="store_true", help="B1 T16384 D1024 (the small grids' rules)")
    ap.add_argument("--time-first", action="store_true", help="the [B, T, N] kernels (hlru_scan / bdlru_scan)")
    ap.add_argument("--dump", default=None, help="write each kernel's SASS here")
    args = ap.parse_args()
    time_last._num_sms = scan._num_sms = lambda device: 132  # an H200's SMs (the launch rules ask the device)
    B, T, D = (1, 16384, 1024) if args.small_grid else (8, 4096, 1024)
    for m in args.m:
        N = D // m
        if args.time_first:
            shape = (B, T, N, m, m + 1) if args.blocked else (B, T, N, m + 1)
            gates = torch.randn(shape, dtype=torch.bfloat16, requires_grad=True)
            values = torch.randn(shape[:-1] if args.blocked else (B, T, N), dtype=torch.bfloat16, requires_grad=True)
            fn = scan.bdlru_scan_triton if args.blocked else scan.hlru_scan_triton
            fn(gates, values, None, "softmax", False, None)[0].float().sum().backward()
            report(f"{'bd' if args.blocked else 'h'}{m}{'_B1' if args.small_grid else ''}_time_first", args.dump)
            continue
        if args.blocked:
            gates, values = torch.randn(B, N, m, m + 1, T, dtype=torch.bfloat16), torch.randn(B, N, m, T,
                                                                                            dtype=torch.bfloat16)
        else:
            gates, values = torch.randn(B, N, m + 1, T, dtype=torch.bfloat16), torch.randn(B, N, T, dtype=torch.bfloat16)
        states, _ = time_last.time_last_forward(gates, values, None, "softmax", False)
        time_last.time_last_backward(gates, values, states, None, torch.randn_like(states), None, "softmax")
        report(f"{'bd' if args.blocked else 'h'}{m}{'_B1' if args.small_grid else ''}", args.dump)


if __name__ == "__main__":
    main()
