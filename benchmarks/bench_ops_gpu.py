"""GPU benchmark of the op family: every backend, the LOMIT eager form, and torch.compile of it.

    python benchmarks/bench_ops_gpu.py                      # full matrix (long: split it, see below)
    python benchmarks/bench_ops_gpu.py --ops highway_adain --dtypes bfloat16
    python benchmarks/bench_ops_gpu.py --dry-run            # tiny shapes, CPU, Triton interpreter

Backends per op: triton (lmt_fast.ops.triton), cuda (the compiled extension, when it registered the op),
reference (lmt_fast.ops.reference), eager (what a PyTorch user writes: LOMIT's official highway-AdaIN
code, F.instance_norm, F.group_norm; the reference for ops with no stock form) and compiled
(torch.compile of that eager form, static shapes, default mode).

Timing: triton.testing.do_bench medians with quantiles 0.5 / 0.2 / 0.8 plus min and max. do_bench
writes a 256 MB buffer before every timed call, so L2 is cold each time; inputs are therefore not
rotated. That time includes the host-side launch cost (Python dispatch, the launcher), which dominates
small shapes; --cuda-graph times graph replays instead (do_bench_cudagraph: device time only, and L2 is
NOT flushed between replays, so inputs smaller than L2 stay warm). A plain device copy of x's bytes
(dst.copy_(x)) is timed the same way in the same run: its rate 2 * bytes / t is the bandwidth ceiling.
An op's rate counts the bytes it must move once: x read, y written, plus masks / residual read
(statistics outputs are negligible).

Results merge into benchmarks/results/ops_gpu_<device>_<date>.json (keyed by op, backend, shape,
dtype), so a long matrix can run as several commands. The summary checks the issue's targets for the
triton backend: >= 80% of copy bandwidth for x >= 16 MB, >= 5x eager, >= 1.5x compiled.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

if "--dry-run" in sys.argv:  # must precede the first import of triton
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lmt_fast.ops import dispatch  # noqa: E402
from lmt_fast.ops import reference as R  # noqa: E402

OPS = ("highway_adain", "region_adain", "instance_norm", "layer_norm", "masked_moments")
BACKENDS = ("triton", "cuda", "reference", "eager", "compiled")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
QUANTILES = (0.5, 0.2, 0.8, 0.0, 1.0)  # median, p20, p80, min, max
TARGETS = {"copy_fraction": 0.80, "min_x_mb": 16.0, "vs_eager": 5.0, "vs_compiled": 1.5}
EPS = 1e-5
REGIONS = 2  # region_adain / masked_moments benchmark K


# --------------------------------------------------------------------------------------------------
# Eager forms (what the official code / a PyTorch user writes)
# --------------------------------------------------------------------------------------------------


def eager_highway_official(x, mask, gamma_f, beta_f, gamma_b, beta_b, eps=EPS):
    """LOMIT's Decoder.highway_AdaIN as the official code writes it, std-of-row-stds quirk included
    (so its output differs from the paper form; it is here for timing)."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    std = torch.std(torch.std(x, dim=3), dim=2)[:, :, None, None]
    normalized = (x - mean) / (std + eps)
    foreground = gamma_f[:, :, None, None] * normalized + beta_f[:, :, None, None]
    background = gamma_b[:, :, None, None] * normalized + beta_b[:, :, None, None]
    return mask * foreground + (1 - mask) * background


def eager_instance_norm(x, weight, bias, eps, activation, residual):
    y = F.instance_norm(x, weight=weight, bias=bias, eps=eps)
    return F.relu(y) if activation == "relu" else y


def eager_layer_norm(x, weight, bias, eps, activation, residual):
    y = F.group_norm(x, 1, weight, bias, eps)
    return y if residual is None else y + residual


EAGER = {
    "highway_adain": eager_highway_official,
    "region_adain": R.region_adain_impl,  # no stock PyTorch form: the plain-PyTorch spec
    "instance_norm": eager_instance_norm,
    "layer_norm": eager_layer_norm,
    "masked_moments": R.masked_moments_impl,
}


# --------------------------------------------------------------------------------------------------
# Inputs, bytes, backends
# --------------------------------------------------------------------------------------------------


def make_args(op, n, c, h, w, dtype, device, gen, memory_format=torch.contiguous_format):
    """The op's arguments (reference impl order) and the bytes it must move."""
    x = (-2.3 + 0.5 * torch.randn(n, c, h, w, generator=gen, device=device, dtype=torch.float32)).to(dtype)
    x = x.contiguous(memory_format=memory_format)
    x_bytes = x.numel() * x.element_size()
    params = lambda *shape: 0.5 + torch.rand(*shape, generator=gen, device=device)  # noqa: E731
    if op == "highway_adain":
        mask = torch.rand(n, 1, h, w, generator=gen, device=device).to(dtype)
        args = (x, mask, params(n, c), params(n, c) - 1, params(n, c), params(n, c) - 1, EPS)
        moved = 2 * x_bytes + mask.numel() * mask.element_size()
    elif op == "region_adain":
        masks = torch.rand(n, REGIONS, h, w, generator=gen, device=device).to(dtype)
        args = (x, masks, params(n, REGIONS, c), params(n, REGIONS, c) - 1, "region", EPS, None, None)
        moved = 2 * x_bytes + masks.numel() * masks.element_size()
    elif op == "masked_moments":
        masks = torch.rand(n, REGIONS, h, w, generator=gen, device=device).to(dtype)
        args = (x, masks, EPS)
        moved = x_bytes + masks.numel() * masks.element_size()
    elif op == "instance_norm":  # conv -> IN -> ReLU, as in the content encoder
        args = (x, params(c), params(c) - 1, EPS, "relu", None)
        moved = 2 * x_bytes
    elif op == "layer_norm":  # conv -> LN -> + skip, as in the decoder's residual blocks
        residual = torch.randn(x.shape, generator=gen, device=device).to(dtype).contiguous(
            memory_format=memory_format)
        args = (x, params(c), params(c) - 1, EPS, None, residual)
        moved = 3 * x_bytes
    else:
        raise ValueError(f"unknown op {op!r}")
    return args, moved, x_bytes


def backend_callables(op, dry_run, compile_cache):
    """{backend: callable(*args)} for the backends that can run `op` here."""
    from lmt_fast.ops import triton as lmt_triton  # noqa: F401  (registers the backend)

    found = {"triton": lmt_triton.IMPLS[op], "reference": R.IMPLS[op], "eager": EAGER[op]}
    cuda = dispatch._REGISTRY.get("cuda")
    if cuda is not None and op in cuda.impls:
        found["cuda"] = cuda.impls[op]
    if op not in compile_cache:
        # The interpreter has no Inductor here; "eager" dynamo still exercises the capture path.
        compile_cache[op] = torch.compile(EAGER[op], dynamic=False,
                                          backend="eager" if dry_run else "inductor")
    found["compiled"] = compile_cache[op]
    return found


def _first_tensor(out):
    return out[0] if isinstance(out, (tuple, list)) else out


# --------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------


def time_gpu(fn, warmup_ms, rep_ms, cuda_graph=False):
    import triton.testing

    if cuda_graph:
        values = triton.testing.do_bench_cudagraph(fn, rep=rep_ms, quantiles=list(QUANTILES))
    else:
        values = triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=list(QUANTILES))
    return dict(zip(("median_ms", "p20_ms", "p80_ms", "min_ms", "max_ms"), values))


def time_cpu(fn, repeats=3):
    """Dry-run stand-in for do_bench: wall-clock quantiles of a few calls."""
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    q = torch.quantile(torch.tensor(samples, dtype=torch.float64), torch.tensor(QUANTILES, dtype=torch.float64))
    return dict(zip(("median_ms", "p20_ms", "p80_ms", "min_ms", "max_ms"), q.tolist()))


def gbps(num_bytes, ms):
    return num_bytes / (ms * 1e-3) / 1e9 if ms and ms > 0 else None


# --------------------------------------------------------------------------------------------------
# Run
# --------------------------------------------------------------------------------------------------


def environment(device, dry_run):
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    info = {"versions": {"torch": torch.__version__, "triton": triton_version, "cuda": torch.version.cuda,
                         "python": platform.python_version()}}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["device"] = {"name": props.name, "sm_count": props.multi_processor_count,
                          "capability": f"{props.major}.{props.minor}",
                          "memory_gb": round(props.total_memory / 2**30, 1)}
    else:
        info["device"] = {"name": "cpu (Triton interpreter, dry run)" if dry_run else "cpu"}
    return info


def result_path(out_dir: Path, device_name: str, date: str, dry_run: bool) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", device_name.lower()).strip("-") or "device"
    if dry_run:
        slug = "cpu-interpreter-dryrun"
    return out_dir / f"ops_gpu_{slug}_{date}.json"


def _key(record):
    fields = ("kind", "op", "backend", "n", "c", "h", "w", "dtype", "layout", "timing", "tuning")
    return tuple(record.get(k) for k in fields)


def merge_records(old, new):
    """New records replace old ones with the same (kind, op, backend, shape, dtype)."""
    merged = {_key(r): r for r in old}
    merged.update({_key(r): r for r in new})
    return sorted(merged.values(), key=lambda r: tuple(str(v) for v in _key(r)))


def summarize(records):
    """Per (op, shape, dtype): triton's speedups and copy fraction against the targets."""
    by_case = {}
    for r in records:
        if r["kind"] == "op" and r.get("median_ms"):
            case = (r["op"], r["n"], r["c"], r["h"], r["w"], r["dtype"], r.get("layout"), r.get("timing"),
                    r.get("tuning"))
            by_case.setdefault(case, {})[r["backend"]] = r
    rows = []
    for (op, n, c, h, w, dtype, layout, timing, tune), found in sorted(by_case.items(), key=lambda kv: str(kv[0])):
        tri = found.get("triton")
        if tri is None:
            continue
        row = {"op": op, "n": n, "c": c, "h": h, "w": w, "dtype": dtype, "layout": layout, "timing": timing,
               "tuning": tune, "x_mb": tri["x_mb"],
               "triton_ms": tri["median_ms"], "copy_fraction": tri.get("copy_fraction")}
        for base in ("eager", "compiled", "cuda", "reference"):
            if base in found:
                row[f"vs_{base}"] = found[base]["median_ms"] / tri["median_ms"]
        checks = {}
        if tri["x_mb"] >= TARGETS["min_x_mb"] and row["copy_fraction"] is not None:
            checks["copy_fraction"] = row["copy_fraction"] >= TARGETS["copy_fraction"]
        if "vs_eager" in row:
            checks["vs_eager"] = row["vs_eager"] >= TARGETS["vs_eager"]
        if "vs_compiled" in row:
            checks["vs_compiled"] = row["vs_compiled"] >= TARGETS["vs_compiled"]
        row["meets"] = checks
        rows.append(row)
    return rows


def run(args) -> Path:
    dry_run = args.dry_run
    device = torch.device("cpu" if dry_run else "cuda")
    if not dry_run and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU machine, or use --dry-run")
    timer = time_cpu if dry_run else (lambda fn: time_gpu(fn, args.warmup_ms, args.rep_ms, args.cuda_graph))
    gen = torch.Generator(device=device).manual_seed(0)
    compile_cache = {}
    if not dry_run:
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 256)
    records = []
    for dtype_name in args.dtypes:
        for layout in args.layouts:
            for n in args.batches:
                for c in args.channels:
                    for size in args.sizes:
                        shape = dict(n=n, c=c, h=size, w=size, dtype=dtype_name, layout=layout)
                        records += bench_shape(args, shape, DTYPES[dtype_name], device, gen, timer,
                                               compile_cache)
    env = environment(device, dry_run)
    date = _dt.date.today().isoformat()
    path = result_path(Path(args.out_dir), env["device"]["name"], date, dry_run)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not args.overwrite:
        records = merge_records(json.loads(path.read_text())["results"], records)
    doc = {
        "schema": "lmt_fast/bench_ops_gpu/1",
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "dry_run": dry_run,
        **env,
        "timing": {"method": "wall clock (dry run)" if dry_run else
                   ("triton.testing.do_bench_cudagraph" if args.cuda_graph else "triton.testing.do_bench"),
                   "quantiles": list(QUANTILES), "warmup_ms": args.warmup_ms, "rep_ms": args.rep_ms,
                   "l2": ("graph replays: L2 not flushed, inputs not rotated" if args.cuda_graph else
                          "do_bench clears L2 (256 MB write) before every timed call; inputs are not rotated"),
                   "bytes": "x read + y written + masks/residual read, each once"},
        "targets": TARGETS,
        "tuning": args.tuning_used,  # of the latest run; records carry their own overrides
        "results": records,
        "summary": summarize(records),
    }
    path.write_text(json.dumps(doc, indent=1))
    print_summary(doc["summary"])
    print(f"wrote {path}")
    return path


def bench_shape(args, shape, dtype, device, gen, timer, compile_cache):
    """Records for one shape: the copy ceiling, then every (op, backend)."""
    memory_format = torch.channels_last if shape["layout"] == "channels_last" else torch.contiguous_format
    shape = dict(shape, timing="cuda_graph" if args.cuda_graph else "launch", tuning=" ".join(args.tuning))
    copy = bench_copy(shape, dtype, device, timer, memory_format)
    records = [copy]
    for op in args.ops:
        records += bench_op(args, op, shape, dtype, device, gen, timer, compile_cache, memory_format,
                            copy.get("gbps"))
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return records


def bench_copy(shape, dtype, device, timer, memory_format):
    record = {"kind": "copy", "op": "copy", "backend": "torch", **shape}
    try:
        src = torch.empty(shape["n"], shape["c"], shape["h"], shape["w"], dtype=dtype, device=device)
        src = src.contiguous(memory_format=memory_format)
        dst = torch.empty_like(src)
        record["bytes"] = 2 * src.numel() * src.element_size()
        record.update(timer(lambda: dst.copy_(src)))
        record["gbps"] = gbps(record["bytes"], record["median_ms"])
        record["status"] = "ok"
    except torch.OutOfMemoryError:
        record["status"] = "oom"
    return record


def bench_op(args, op, shape, dtype, device, gen, timer, compile_cache, memory_format, copy_rate):
    """One record per backend; a backend that fails or runs out of memory is recorded as such."""
    try:
        op_args, moved, x_bytes = make_args(op, shape["n"], shape["c"], shape["h"], shape["w"], dtype,
                                            device, gen, memory_format)
    except torch.OutOfMemoryError:
        return [{"kind": "op", "op": op, "backend": "-", **shape, "status": "oom"}]
    records, expected = [], None
    for backend, fn in backend_callables(op, args.dry_run, compile_cache).items():
        if backend not in args.backends:
            continue
        rec = {"kind": "op", "op": op, "backend": backend, **shape, "bytes": moved, "x_mb": x_bytes / 2**20}
        try:
            out = _first_tensor(fn(*op_args)).float()  # warm-up / compile, and the value to check
            if backend == "reference":
                expected = out
            elif backend in ("triton", "cuda"):
                if expected is None:
                    expected = _first_tensor(R.IMPLS[op](*op_args)).float()
                rec["max_abs_err_vs_reference"] = (out - expected).abs().max().item()
            out = None
            rec.update(timer(lambda: fn(*op_args)))
            rec["gbps"] = gbps(moved, rec["median_ms"])
            rec["copy_fraction"] = rec["gbps"] / copy_rate if copy_rate else None
            rec["status"] = "ok"
        except torch.OutOfMemoryError:
            rec["status"] = "oom"
        except Exception as exc:  # one failing backend must not lose the rest of the run
            rec["status"] = f"error: {type(exc).__name__}: {exc}"[:500]
        records.append(rec)
    return records


def print_summary(rows):
    if not rows:
        return
    print(f"{'op':15s} {'N':>3s} {'C':>4s} {'HxW':>8s} {'dtype':9s} {'layout':13s} {'MB':>7s} {'triton ms':>10s} "
          f"{'copy%':>6s} {'x eager':>8s} {'x comp':>7s}  targets")
    for r in rows:
        frac = r.get("copy_fraction")
        met = " ".join(f"{k}={'ok' if v else 'MISS'}" for k, v in r["meets"].items())
        print(f"{r['op']:15s} {r['n']:3d} {r['c']:4d} {r['h']:>4d}x{r['w']:<3d} {r['dtype']:9s} "
              f"{str(r['layout']):13s} "
              f"{r['x_mb']:7.1f} {r['triton_ms']:10.4f} "
              f"{(100 * frac if frac else math.nan):6.1f} {r.get('vs_eager', math.nan):8.2f} "
              f"{r.get('vs_compiled', math.nan):7.2f}  {met}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ops", nargs="+", choices=OPS, default=list(OPS))
    p.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    p.add_argument("--channels", nargs="+", type=int, default=[64, 256])
    p.add_argument("--sizes", nargs="+", type=int, default=[32, 64, 128, 256], help="H = W")
    p.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES))
    p.add_argument("--layouts", nargs="+", choices=["nchw", "channels_last"], default=["nchw"])
    p.add_argument("--cuda-graph", action="store_true",
                   help="time CUDA-graph replays (device time only; L2 stays warm)")
    p.add_argument("--warmup-ms", type=float, default=25.0)
    p.add_argument("--rep-ms", type=float, default=100.0)
    p.add_argument("--tuning", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override lmt_fast.ops.triton.Tuning fields, e.g. resident_cap=8192 force_path=split")
    p.add_argument("--out-dir", default=None,
                   help="default: benchmarks/results (a temporary folder for --dry-run)")
    p.add_argument("--overwrite", action="store_true", help="replace the day's file instead of merging")
    p.add_argument("--dry-run", action="store_true",
                   help="tiny shapes on CPU in the Triton interpreter: checks the script, times nothing real")
    args = p.parse_args(argv)
    if args.dry_run:
        args.batches, args.channels, args.sizes, args.dtypes = [1], [3], [5], ["float32", "bfloat16"]
        args.cuda_graph = False
        args.out_dir = args.out_dir or tempfile.mkdtemp(prefix="lmt_bench_")
    args.out_dir = args.out_dir or str(ROOT / "benchmarks" / "results")
    return args


def _tuning_overrides(pairs):
    """KEY=VALUE strings -> Tuning fields (ints where they parse, None for 'none')."""
    overrides = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if value.lower() == "none":
            overrides[key] = None
        else:
            try:
                overrides[key] = int(value)
            except ValueError:
                try:
                    overrides[key] = float(value)
                except ValueError:
                    overrides[key] = value
    return overrides


def main(argv=None) -> Path:
    from lmt_fast.ops.triton import tuning

    args = parse_args(argv)
    with tuning(**_tuning_overrides(args.tuning)) as used:
        args.tuning_used = dataclasses.asdict(used)
        return run(args)


if __name__ == "__main__":
    main()
