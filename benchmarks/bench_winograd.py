"""Winograd F(4x4, 3x3) vs oneDNN's direct conv for the 3x3 convs of the LOMIT generator (CPU).

    python benchmarks/bench_winograd.py                  # the paper model's shapes + a channel sweep
    python benchmarks/bench_winograd.py --quick          # two shapes, short timings

Each case is a "valid" 3x3 conv on an already padded, channels_last float32 input (what the fused runtime
runs): `F.conv2d` (oneDNN direct) against `lmt_fast.runtime.winograd.winograd_conv2d`, timed in alternating
blocks (bench_ops_cpu.time_interleaved), medians. Errors are max |y - exact| / max |exact| with the exact
conv computed in float64. The channel sweep is what MIN_CHANNELS (the narrowest conv put on Winograd) rests on.
Results: benchmarks/results/winograd_cpu_<date>.json (or --out) and a printed table.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_ops_cpu import cpu_model, load_average, time_interleaved  # noqa: E402
from lmt_fast.runtime import winograd  # noqa: E402

# (label, N, C_in, C_out, padded H = W) at 128x128 images
PAPER_SHAPES = [
    ("residual / mask conv, twin batch", 2, 256, 256, 34),
    ("residual conv, decoder", 1, 256, 256, 34),
    ("decoder phase conv 32->64", 1, 256, 512, 34),
    ("decoder phase conv 64->128", 1, 128, 256, 66),
    ("residual conv, batch 8", 8, 256, 256, 34),
]
SWEEP_CHANNELS = (16, 32, 64, 128)


def run_case(n: int, c_in: int, c_out: int, size: int, seconds: float) -> dict:
    gen = torch.Generator().manual_seed(n * 1000 + c_in + c_out + size)
    x = torch.randn(n, c_in, size, size, generator=gen).contiguous(memory_format=torch.channels_last)
    weight = (torch.randn(c_out, c_in, 3, 3, generator=gen) / (3 * c_in ** 0.5)).contiguous(
        memory_format=torch.channels_last)
    bias = torch.randn(c_out, generator=gen)
    u = winograd.winograd_weight(weight)
    exact = F.conv2d(x.double(), weight.double(), bias.double())
    scale = exact.abs().max().item()
    results = {}
    with torch.inference_mode():
        timings = time_interleaved({"direct": lambda: F.conv2d(x, weight, bias),
                                    "winograd": lambda: winograd.winograd_conv2d(x, u, bias)}, seconds, min_reps=9)
        for name, y in (("direct", F.conv2d(x, weight, bias)), ("winograd", winograd.winograd_conv2d(x, u, bias))):
            results[name] = {**timings[name], "rel_err": (y.double() - exact).abs().max().item() / scale}
    macs = n * c_in * c_out * 9 * (size - 2) ** 2
    return {"n": n, "c_in": c_in, "c_out": c_out, "padded_size": size, "direct_gmacs": macs / 1e9,
            "speedup": results["direct"]["median_us"] / results["winograd"]["median_us"], **results}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=0.5, help="time spent per candidate and shape")
    parser.add_argument("--quick", action="store_true", help="two shapes, short timings")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    cases = [(label, n, ci, co, s) for label, n, ci, co, s in PAPER_SHAPES]
    cases += [(f"sweep C={c}", 1, c, c, 34) for c in SWEEP_CHANNELS]
    if args.quick:
        cases, args.seconds = [cases[1], cases[-1]], 0.1

    load_before = load_average()
    rows = []
    print(f"{'case':34s} {'N':>2s} {'Cin':>4s} {'Cout':>4s} {'H':>3s}  {'direct us':>10s} {'wino us':>10s} "
          f"{'speedup':>7s}  {'err direct':>10s} {'err wino':>10s}")
    for label, n, c_in, c_out, size in cases:
        row = {"case": label, **run_case(n, c_in, c_out, size, args.seconds)}
        rows.append(row)
        print(f"{label:34s} {n:2d} {c_in:4d} {c_out:4d} {size:3d}  {row['direct']['median_us']:10.0f} "
              f"{row['winograd']['median_us']:10.0f} {row['speedup']:7.2f}  {row['direct']['rel_err']:10.2e} "
              f"{row['winograd']['rel_err']:10.2e}", flush=True)

    date = _dt.date.today().isoformat()
    out = args.out or ROOT / "benchmarks" / "results" / f"winograd_cpu_{date}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": "bench_winograd", "date": date, "device": "cpu", "cpu": cpu_model(),
        "threads": args.threads, "python": platform.python_version(), "torch": torch.__version__,
        "min_channels": winograd.MIN_CHANNELS, "load_average_before": load_before,
        "load_average_after": load_average(), "command": " ".join(["python", "benchmarks/bench_winograd.py",
                                                                    *(argv if argv is not None else sys.argv[1:])]),
        "cases": rows,
    }
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
