"""Benchmark the SSD scan and the whole Mamba-2 block at VAMBA-7B sizes on one CUDA GPU; write JSON
(``scripts/bench_mamba2.py``).

Sizes: d_model 3584, 112 heads of 64, d_state 128, 1 group, chunk 256, batch 1, bf16 activations and
weights (A, D, dt_bias as the block holds them). For each token count: forward, and forward+backward,
median time over repeats (``vamba.utils.timing.measure``: CUDA events, after two warm-up runs), peak memory above
the inputs, and achieved
TFLOP/s (matmul FLOPs; forward+backward counted as 3x forward) and GB/s (fewest bytes: each input read
once, each output written once) against this device's measured ceilings (a bf16 8192^3 matmul; a
device-to-device copy counting bytes read plus written).

    python scripts/bench_mamba2.py --out docs/results/mamba2_bench.json [--tokens 38250 153000 612000] [--what scan block]
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import torch

from vamba.models.flops import ssd_flops
from vamba.models.mamba2 import Mamba2Block, Mamba2Config
from vamba.ops import ssd_scan
from vamba.utils.io import atomic_write_json
from vamba.utils.provenance import header
from vamba.utils.timing import matmul_tflops, measure

D_MODEL, HEADS, HEADDIM, D_STATE, CHUNK = 3584, 112, 64, 128, 256


def copy_gbps() -> float:
    """This device's measured copy bandwidth: fp32 2 GiB device-to-device, bytes read + written per second / 1e9."""
    src = torch.randn(2**29, device="cuda", dtype=torch.float32)
    dst = torch.empty_like(src)
    out = measure(lambda: dst.copy_(src), torch.device("cuda"), reps=20, warmup=3)
    if out["status"] != "ok":
        raise RuntimeError(f"the copy that measures the device's bandwidth failed: {out}")
    return 2 * src.numel() * 4 / out["total_ms"] / 1e6


def ceilings() -> dict:
    """This device's measured bf16 matmul rate and copy bandwidth: the denominators of achieved fractions."""
    return {"bf16_matmul_tflops": matmul_tflops(torch.device("cuda"), torch.bfloat16), "copy_gbps": copy_gbps(),
            "matmul": "bf16 8192x8192x8192 torch.matmul", "copy": "fp32 2 GiB device-to-device, read + write bytes"}


def measure_op(name: str, tokens: int, forward: Callable[[], torch.Tensor], inputs: list[torch.Tensor],
            flops_fwd: float, bytes_fwd: float, ceil: dict, reps: int) -> dict:
    """Forward and forward+backward figures for one configuration; an OOM is recorded, not raised."""
    row: dict = {"what": name, "tokens": tokens, "flops_fwd": flops_fwd, "bytes_fwd_min": bytes_fwd}
    grad = None

    def fwd() -> None:
        with torch.no_grad():
            forward()

    def fwd_bwd() -> None:
        nonlocal grad
        out = forward()
        if grad is None:
            grad = torch.randn_like(out)
        out.backward(grad)
        for t in inputs:
            t.grad = None

    for mode, fn, flops in (("fwd", fwd, flops_fwd), ("fwd_bwd", fwd_bwd, 3 * flops_fwd)):
        out = measure(fn, torch.device("cuda"), reps=reps, warmup=2)
        if out["status"] != "ok":
            row[mode] = {"error": "out of memory" if out["status"] == "oom" else out["error"]}
            grad = None
            continue
        ms, peak = out["total_ms"], out["peak_above_start_gib"]
        row[mode] = {"ms": ms, "peak_gib": peak, "tflops": flops / ms / 1e9,
                     "tflops_frac": flops / ms / 1e9 / ceil["bf16_matmul_tflops"]}
        if mode == "fwd":
            row[mode]["gbps"] = bytes_fwd / ms / 1e6
            row[mode]["gbps_frac"] = row[mode]["gbps"] / ceil["copy_gbps"]
    return row


def bench_scan(tokens: int, backend: str, ceil: dict, reps: int) -> dict:
    d, bf = "cuda", torch.bfloat16
    x = torch.randn(1, tokens, HEADS, HEADDIM, device=d, dtype=bf, requires_grad=True)
    dt = (torch.randn(1, tokens, HEADS, device=d) - 2).to(bf).requires_grad_()
    B = torch.randn(1, tokens, 1, D_STATE, device=d, dtype=bf, requires_grad=True)
    C = torch.randn(1, tokens, 1, D_STATE, device=d, dtype=bf, requires_grad=True)
    A = (-torch.rand(HEADS, device=d) * 15 - 1).requires_grad_()
    D = torch.ones(HEADS, device=d, requires_grad=True)
    dt_bias = torch.randn(HEADS, device=d, requires_grad=True)

    def forward() -> torch.Tensor:
        return ssd_scan(x, dt, A, B, C, CHUNK, D=D, dt_bias=dt_bias, backend=backend)

    flops = ssd_flops(1, tokens, HEADS, HEADDIM, D_STATE, CHUNK)
    nbytes = 2 * (2 * x.numel() + dt.numel() + B.numel() + C.numel())  # x, dt, B, C in; y out
    return measure_op(f"ssd_scan[{backend}]", tokens, forward, [x, dt, B, C, A, D, dt_bias], flops, nbytes, ceil, reps)


def bench_block(tokens: int, backend: str, ceil: dict, reps: int) -> dict:
    config = Mamba2Config(d_model=D_MODEL, d_state=D_STATE, headdim=HEADDIM, chunk_size=CHUNK, backend=backend)
    block = Mamba2Block(config).to(device="cuda", dtype=torch.bfloat16)
    hidden = torch.randn(1, tokens, D_MODEL, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    d_in_proj = 2 * config.d_inner + 2 * D_STATE + HEADS
    flops = (2 * tokens * D_MODEL * d_in_proj + 2 * tokens * config.d_inner * D_MODEL
             + ssd_flops(1, tokens, HEADS, HEADDIM, D_STATE, CHUNK))
    nbytes = 2 * (2 * hidden.numel() + sum(p.numel() for p in block.parameters()))  # hidden in/out, weights
    row = measure_op(f"mamba2_block[{backend}]", tokens, lambda: block(hidden), [hidden, *block.parameters()],
                  flops, nbytes, ceil, reps)
    return row  # block and hidden are freed here; main() empties the cache between rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="JSON file to write (atomically, after every row)")
    parser.add_argument("--tokens", type=int, nargs="+", default=[38_250, 153_000, 612_000])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--what", nargs="+", choices=["scan", "block"], default=["scan", "block"])
    parser.add_argument("--reference-tokens", type=int, default=38_250,
                        help="also time the PyTorch reference scan (forward) at this size; 0 to skip")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not torch.cuda.is_available():
        print("bench_mamba2: needs a CUDA GPU", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    result = {**header("cuda"),
              "sizes": {"d_model": D_MODEL, "nheads": HEADS, "headdim": HEADDIM, "d_state": D_STATE, "ngroups": 1,
                        "chunk_size": CHUNK, "batch": 1, "dtype": "bfloat16"},
              "notes": "fwd_bwd TFLOP/s counts 3x the forward FLOPs; fwd GB/s counts the fewest bytes; "
                       "peak_gib is above the inputs and weights", "ceilings": ceilings(), "rows": []}
    ceil = result["ceilings"]
    print(f"ceilings: {ceil['bf16_matmul_tflops']:.0f} TFLOP/s bf16 matmul, {ceil['copy_gbps']:.0f} GB/s copy", flush=True)
    jobs = [(bench_scan, t, "fast") for t in args.tokens if "scan" in args.what]
    jobs += [(bench_block, t, "fast") for t in args.tokens if "block" in args.what]
    if args.reference_tokens and "scan" in args.what:
        jobs.append((bench_scan, args.reference_tokens, "reference"))
    for bench, tokens, backend in jobs:
        try:
            row = bench(tokens, backend, ceil, args.reps)
        except RuntimeError as e:  # a failed point is recorded and the sweep goes on (OOM is handled inside)
            row = {"what": f"{bench.__name__.removeprefix('bench_')}[{backend}]", "tokens": tokens,
                   "error": str(e).splitlines()[0][:300], "fwd": {}, "fwd_bwd": {}}
        result["rows"].append(row)
        atomic_write_json(args.out, result)
        torch.cuda.empty_cache()
        print(row, flush=True)

    print(f"\n{'what':<26}{'tokens':>9}{'fwd ms':>9}{'fwd+bwd ms':>12}{'peak GiB':>10}{'TFLOP/s':>9}{'of peak':>9}")
    for row in result["rows"]:
        f, fb = row["fwd"], row["fwd_bwd"]
        missing = "ERROR" if "error" in row else "OOM"
        cell = lambda r, k, fmt: format(r[k], fmt) if k in r else missing.rjust(int(fmt[:-3]))  # noqa: E731
        print(f"{row['what']:<26}{row['tokens']:>9}{cell(f, 'ms', '9.1f')}{cell(fb, 'ms', '12.1f')}"
              f"{cell(fb, 'peak_gib', '10.1f')}{cell(fb, 'tflops', '9.0f')}{cell(fb, 'tflops_frac', '9.0%')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
