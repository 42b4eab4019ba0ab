"""CPU benchmark of the op family: the "cpu" backend (csrc/cpu) against what a PyTorch user writes.

    python benchmarks/bench_ops_cpu.py                  # the issue's matrix, 2 threads, float32
    python benchmarks/bench_ops_cpu.py --quick          # one small shape, no torch.compile (smoke test)
    python benchmarks/bench_ops_cpu.py --ops region_adain --layouts nchw channels_last

Per op and shape (N in {1, 8}, C in {128, 256}, H = W in {32, 64}, float32) it times:
  cpu       the public op, ``lmt_fast.ops.<op>(..., backend="cpu")``: argument checks, dispatch, the
            Python wrapper and the C++ kernel, i.e. what a model layer pays;
  kernel    ``torch.ops.lmt.<op>`` alone, with its inputs prepared (masks at x's size, in float32);
  eager     the eager PyTorch form: for region_adain and highway_adain LOMIT's official highway AdaIN
            (mean, std-of-row-stds, normalise, two affines, blend: separate ops); F.instance_norm;
            F.group_norm(x, 1, ...);
  compiled  torch.compile of that eager form (static shapes, default mode); a failure is recorded;
  copy      ``x.clone()``: the same bytes of x read once and written once.
region_adain runs with K = 2 masks [m, 1 - m] and global statistics: the HAdaIN computation, so it is
compared with the same eager form as highway_adain.

Timing: every call is timed on its own (time.perf_counter_ns) after a warm-up; the candidates of a case
take turns in blocks of ~20 ms (so a burst of load from another process hits them alike) for about
--seconds each; medians, p20/p80, min and max are reported. Inputs are not rotated: except for the
largest case they fit in L3, as an activation consumed by the next layer would. Every call allocates its
output (as in a model), so all candidates, copy included, pay for that. GB/s counts the bytes an op must
move once: x read + masks read + y written.

Results go to benchmarks/results/ops_cpu_<date>.json (ops_cpu_<date>_<n>threads.json for other thread
counts) with the CPU model, versions, thread count and the
load average seen before and after (other processes on the machine skew timings: read it).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lmt_fast import ops  # noqa: E402
from lmt_fast.ops import backends  # noqa: E402

OPS = ("region_adain", "highway_adain", "instance_norm", "layer_norm")
EPS = 1e-5
TARGETS = {"vs_eager": 4.0, "vs_copy": 2.5}  # region_adain: >= 4x faster than eager, <= 2.5x a copy


# --------------------------------------------------------------------------------------------------
# Eager forms
# --------------------------------------------------------------------------------------------------


def eager_highway_official(x, mask, gamma_f, beta_f, gamma_b, beta_b, eps=EPS):
    """LOMIT's highway AdaIN as the official code writes it (its std-of-row-stds quirk included)."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    std = torch.std(torch.std(x, dim=3), dim=2)[:, :, None, None]
    normalized = (x - mean) / (std + eps)
    foreground = gamma_f[:, :, None, None] * normalized + beta_f[:, :, None, None]
    background = gamma_b[:, :, None, None] * normalized + beta_b[:, :, None, None]
    return mask * foreground + (1 - mask) * background


def eager_instance_norm(x, weight, bias):
    return F.instance_norm(x, weight=weight, bias=bias, eps=EPS)


def eager_layer_norm(x, weight, bias):
    return F.group_norm(x, 1, weight, bias, EPS)


# --------------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------------


def make_case(op, n, c, size, layout, gen):
    """(candidates {name: zero-arg callable}, bytes moved) for one op and shape."""
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = (-2.3 + 0.5 * torch.randn(n, c, size, size, generator=gen)).contiguous(memory_format=fmt)
    mask = torch.rand(n, 1, size, size, generator=gen)
    gamma_f, beta_f, gamma_b, beta_b = (torch.rand(n, c, generator=gen) + 0.5 for _ in range(4))
    weight, bias = torch.rand(c, generator=gen) + 0.5, torch.randn(c, generator=gen)
    x_bytes = x.numel() * x.element_size()
    styles = (gamma_f, beta_f, gamma_b, beta_b)
    if op == "region_adain":
        masks = torch.cat([mask, 1 - mask], dim=1)
        gamma, beta = torch.stack([gamma_f, gamma_b], 1), torch.stack([beta_f, beta_b], 1)
        cands = {
            "cpu": lambda: ops.region_adain(x, masks, gamma, beta, "global", EPS, backend="cpu"),
            "kernel": lambda: torch.ops.lmt.region_adain(x, masks, gamma, beta, False, EPS, 0, None),
            "eager": lambda: eager_highway_official(x, mask, *styles),
            "compiled": (eager_highway_official, (x, mask, *styles)),
        }
        moved = 2 * x_bytes + masks.numel() * 4
    elif op == "highway_adain":
        cands = {
            "cpu": lambda: ops.highway_adain(x, mask, *styles, backend="cpu"),
            "eager": lambda: eager_highway_official(x, mask, *styles),
            "compiled": (eager_highway_official, (x, mask, *styles)),
        }
        moved = 2 * x_bytes + mask.numel() * 4
    elif op == "instance_norm":
        cands = {
            "cpu": lambda: ops.instance_norm(x, weight, bias, EPS, backend="cpu"),
            "kernel": lambda: torch.ops.lmt.instance_norm(x, weight, bias, EPS, 0, None),
            "eager": lambda: eager_instance_norm(x, weight, bias),
            "compiled": (eager_instance_norm, (x, weight, bias)),
        }
        moved = 2 * x_bytes
    else:
        cands = {
            "cpu": lambda: ops.layer_norm(x, weight, bias, EPS, backend="cpu"),
            "kernel": lambda: torch.ops.lmt.layer_norm(x, weight, bias, EPS, 0, None),
            "eager": lambda: eager_layer_norm(x, weight, bias),
            "compiled": (eager_layer_norm, (x, weight, bias)),
        }
        moved = 2 * x_bytes
    cands["copy"] = lambda: x.clone()
    return cands, moved, x_bytes


def compiled_callable(fn, args):
    """torch.compile(fn) warmed up on args, or the exception text when it does not compile here."""
    torch._dynamo.reset()
    try:
        compiled = torch.compile(fn, dynamic=False)
        compiled(*args)
    except Exception as exc:  # noqa: BLE001  (a missing compiler etc.: report, do not abort the run)
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
    return (lambda: compiled(*args)), None


def time_interleaved(cands, seconds, min_reps=15, max_reps=5000, block_seconds=0.02):
    """Per-call times in microseconds for every candidate, taken in alternating blocks of ~20 ms.

    Interleaving puts all candidates of a case under the same conditions: on a shared machine a burst of
    load from another process then slows every candidate, instead of skewing the one timed during it.
    """
    for fn in cands.values():
        for _ in range(3):
            fn()
    times = {name: [] for name in cands}
    start = time.perf_counter()
    while True:
        for name, fn in cands.items():
            block_start = time.perf_counter()
            while time.perf_counter() - block_start < block_seconds and len(times[name]) < max_reps:
                t0 = time.perf_counter_ns()
                fn()
                times[name].append((time.perf_counter_ns() - t0) / 1e3)
        enough = all(len(t) >= min_reps for t in times.values())
        if enough and (time.perf_counter() - start > seconds * len(cands) or
                       all(len(t) >= max_reps for t in times.values())):
            break
    return {name: summarize(t) for name, t in times.items()}


def summarize(times):
    times = sorted(times)

    def q(p):
        return times[min(len(times) - 1, int(p * len(times)))]

    return {"median_us": q(0.5), "p20_us": q(0.2), "p80_us": q(0.8), "min_us": times[0], "max_us": times[-1],
            "reps": len(times)}


# --------------------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def load_average():
    try:
        return list(os.getloadavg())
    except OSError:
        return None


# --------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", nargs="+", default=list(OPS), choices=OPS)
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--channels", nargs="+", type=int, default=[128, 256])
    parser.add_argument("--sizes", nargs="+", type=int, default=[32, 64])
    parser.add_argument("--layouts", nargs="+", default=["nchw"], choices=["nchw", "channels_last"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=0.5, help="time spent per candidate and shape")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile of the eager forms")
    parser.add_argument("--quick", action="store_true", help="one small shape, no compile, short timings")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/...)")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.channels, args.sizes, args.seconds, args.no_compile = [1], [128], [32], 0.1, True

    if "cpu" not in ops.available_backends("cpu"):
        print(f"the cpu backend is unavailable: {backends.unavailable.get('cpu')}", file=sys.stderr)
        return 1
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    started = _dt.datetime.now(_dt.timezone.utc)
    load_before = load_average()
    rows = []
    header = f"{'op':14s} {'layout':13s} {'shape':18s} {'cpu us':>9s} {'kernel':>9s} {'eager':>9s} " \
             f"{'compiled':>9s} {'copy':>8s} {'x eager':>8s} {'x comp':>7s} {'/copy':>6s} {'GB/s':>6s}"
    print(header)
    for op in args.ops:
        for layout in args.layouts:
            for n in args.batch:
                for c in args.channels:
                    for size in args.sizes:
                        cands, moved, x_bytes = make_case(op, n, c, size, layout, gen)
                        runnable, errors = {}, {}
                        for name, cand in cands.items():
                            if name == "compiled":
                                if args.no_compile:
                                    continue
                                cand, error = compiled_callable(*cand)
                                if cand is None:
                                    errors[name] = error
                                    continue
                            runnable[name] = cand
                        timings = time_interleaved(runnable, args.seconds)
                        med = {k: v["median_us"] for k, v in timings.items()}
                        ratios = {
                            "eager_over_cpu": med["eager"] / med["cpu"],
                            "compiled_over_cpu": med["compiled"] / med["cpu"] if "compiled" in med else None,
                            "cpu_over_copy": med["cpu"] / med["copy"],
                            "kernel_over_copy": med["kernel"] / med["copy"] if "kernel" in med else None,
                        }
                        row = {
                            "op": op, "layout": layout, "shape": [n, c, size, size], "dtype": "float32",
                            "x_mb": x_bytes / 2**20, "bytes_moved": moved, "timings": timings, "errors": errors,
                            "ratios": ratios,
                            "cpu_gbps": moved / (med["cpu"] * 1e3),
                            "copy_gbps": 2 * x_bytes / (med["copy"] * 1e3),
                        }
                        rows.append(row)

                        def fmt(name):
                            return f"{med[name]:9.1f}" if name in med else f"{'-':>9s}"

                        comp = f"{ratios['compiled_over_cpu']:7.2f}" if ratios["compiled_over_cpu"] else f"{'-':>7s}"
                        print(f"{op:14s} {layout:13s} {str((n, c, size, size)):18s} {fmt('cpu')} {fmt('kernel')} "
                              f"{fmt('eager')} {fmt('compiled')} {med['copy']:8.1f} {ratios['eager_over_cpu']:8.2f} "
                              f"{comp} {ratios['cpu_over_copy']:6.2f} {row['cpu_gbps']:6.1f}", flush=True)
                        for name, error in errors.items():
                            print(f"    {name} failed: {error}")

    summary = {}
    for row in rows:
        if row["op"] != "region_adain":
            continue
        key = f"{row['layout']} {tuple(row['shape'])}"
        summary[key] = {
            "eager_over_cpu": round(row["ratios"]["eager_over_cpu"], 2),
            "meets_vs_eager": row["ratios"]["eager_over_cpu"] >= TARGETS["vs_eager"],
            "cpu_over_copy": round(row["ratios"]["cpu_over_copy"], 2),
            "kernel_over_copy": round(row["ratios"]["kernel_over_copy"], 2),
            "meets_vs_copy": row["ratios"]["cpu_over_copy"] <= TARGETS["vs_copy"],
        }
    result = {
        "benchmark": "ops_cpu",
        "device": "cpu",
        "cpu_model": cpu_model(),
        "processor": platform.processor(),
        "machine": platform.machine(),
        "logical_cpus": os.cpu_count(),
        "threads": args.threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": started.isoformat(timespec="seconds"),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "targets": TARGETS,
        "notes": "medians of single calls; inputs not rotated; every call allocates its output",
        "region_adain_targets": summary,
        "rows": rows,
    }
    suffix = "" if args.threads == 2 else f"_{args.threads}threads"  # 2 threads: the setting
    out = args.out or ROOT / "benchmarks" / "results" / f"ops_cpu_{started.date().isoformat()}{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nregion_adain vs targets (>= {TARGETS['vs_eager']}x eager, <= {TARGETS['vs_copy']}x copy):")
    for key, s in summary.items():
        print(f"  {key:30s} {s['eager_over_cpu']:6.2f}x eager ({'ok' if s['meets_vs_eager'] else 'MISSED'}), "
              f"{s['cpu_over_copy']:5.2f}x copy ({'ok' if s['meets_vs_copy'] else 'MISSED'}; "
              f"kernel alone {s['kernel_over_copy']:.2f}x)")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
