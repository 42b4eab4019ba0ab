"""End-to-end benchmark of the LOMIT generator behind each Translator backend.

    python benchmarks/bench_e2e.py                      # paper-size model, 128² and 256², all variants
    python benchmarks/bench_e2e.py --device cuda --batches 1 8 32 64
    python benchmarks/bench_e2e.py --model tiny --sizes 64 --batches 1 2 --repeats 2     # smoke run

What is measured: the generator a Translator builds for each backend, at the generator level: tensors
in, tensors out, on the device. Image decoding, resizing, uint8 conversion and the Translator's checks
are excluded (they are the same for every backend). Batch 1 gives latency, larger batches throughput.

Variants (each built from the same weights):
  eager        the module as loaded, reference ops, BatchNorm not folded, float32, NCHW (the baseline)
  fused        lmt_fast.runtime.fused.FusedGenerator, float32 (CUDA graphs on CUDA; Winograd 3x3 convs on CPU)
  fused_direct the same without Winograd convs (direct oneDNN / cuDNN convs): what Winograd adds
  fused_bf16   the same in bfloat16 (the CPU's low precision); fused_fp16: float16 (CUDA's)
  compile      torch.compile of the eager module (mode "default" on CPU, "max-autotune" on CUDA); its
               compile time is reported, a failure recorded
  onnxruntime  the Translator's "onnxruntime" backend (graphs exported once into the export cache)
Modes:
  new          generator(x_in, x_ex): a new exemplar on every call (both images encoded; twin batched)
  cached       encode_exemplar once, then translate_encoded(x_in, code) (translate_batch's path)
  repeat       translate() with an exemplar image seen before: the paired forward reusing the cached
               exemplar's content code and attention (the Translator's exemplar cache; torch variants)

No trained paper-size model ships, so the paper model has random weights with randomised norm affines
and BatchNorm / running statistics (folding then does real work). Timings: warm-up calls, then the
variants take turns call by call (so load from other processes hits them alike); median, min and max.
Errors: max |image - eager float32 image| on the same inputs, per mode. Results go to
benchmarks/results/e2e_<device>_<date>.json (or --out) and a table is printed.
"""
from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_ops_cpu import cpu_model  # noqa: E402
from lmt_fast.models import LOMITConfig, LOMITGenerator, count_parameters  # noqa: E402
from lmt_fast.models.layers import Norm  # noqa: E402
from lmt_fast.runtime import fused  # noqa: E402
from lmt_fast.translator import Translator  # noqa: E402

VARIANTS = ("eager", "fused", "fused_direct", "fused_bf16", "fused_fp16", "compile", "onnxruntime")
DEFAULT_VARIANTS = {"cpu": ("eager", "fused", "fused_direct", "fused_bf16", "compile", "onnxruntime"),
                    "cuda": ("eager", "fused", "fused_fp16", "compile", "onnxruntime")}
DEFAULT_BATCHES = {"cpu": (1, 8), "cuda": (1, 8, 32, 64)}
MODES = ("new", "cached", "repeat")
LOW_PRECISION = {"fused_bf16": "bfloat16", "fused_fp16": "float16"}


# --------------------------------------------------------------------------------------------------
# The model and the variants
# --------------------------------------------------------------------------------------------------


def make_generator(model: str, compat: str, seed: int = 0) -> LOMITGenerator:
    """Random weights; norm affines and running statistics randomised so folding is not trivial."""
    cfg = LOMITConfig.paper(compat=compat) if model == "paper" else LOMITConfig.tiny(compat=compat)
    torch.manual_seed(seed)
    g = LOMITGenerator(cfg)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in g.modules():
            if isinstance(m, Norm) and m.kind != "none":
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
                if hasattr(m, "running_var"):
                    m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) * 1.5 + 0.5)
                    m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.2)
    return g.eval()


class Variant:
    """Callables for each mode of one backend: new(x_in, x_ex), cached(x_in, code), repeat(x_in, parts)."""

    def __init__(self, name, generator, compiled=None):
        self.name = name
        self.generator = generator
        self.compiled = compiled  # (forward, translate_encoded) for the compile variant

    def new(self, x_in, x_ex):
        fn = self.compiled[0] if self.compiled else self.generator
        return fn(x_in, x_ex).image

    def encode(self, x_ex):
        return self.generator.encode_exemplar(x_ex)

    def cached(self, x_in, code):
        fn = self.compiled[1] if self.compiled else self.generator.translate_encoded
        return fn(x_in, code).image

    @property
    def has_repeat(self) -> bool:
        return self.compiled is None and self.name != "onnxruntime"

    def split(self, x_in, x_ex):
        return self.generator.paired_forward(x_in, x_ex)[1]

    def repeat(self, x_in, parts):
        return self.generator.paired_forward_cached(x_in, parts).image


def build_variant(name: str, g: LOMITGenerator, device: str) -> tuple:
    """(Variant, seconds to build, note) or (None, seconds, why it could not be built)."""
    start = time.perf_counter()
    try:
        if name == "eager":
            variant = Variant(name, Translator(copy.deepcopy(g), device=device, backend="eager").generator)
        elif name == "fused":
            variant = Variant(name, Translator(g, device=device, backend="fused").generator)
        elif name == "fused_direct":
            variant = Variant(name, Translator(fused.FusedGenerator(g, device=device, winograd=False),
                                               device=device, backend="fused").generator)
        elif name in LOW_PRECISION:
            variant = Variant(name, Translator(g, device=device, backend="fused", dtype=LOW_PRECISION[name]).generator)
        elif name == "compile":
            module = Translator(copy.deepcopy(g), device=device, backend="eager").generator
            mode = "max-autotune" if device.startswith("cuda") else "default"
            variant = Variant(name, module, (torch.compile(module, mode=mode, dynamic=False),
                                             torch.compile(module.translate_encoded, mode=mode, dynamic=False)))
        elif name == "onnxruntime":
            variant = Variant(name, Translator(g, device=device, backend="onnxruntime").generator)
        else:
            raise ValueError(f"unknown variant {name!r}")
    except Exception as exc:  # noqa: BLE001  (record, go on with the others)
        return None, time.perf_counter() - start, _short(exc)
    return variant, time.perf_counter() - start, None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


# --------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_round_robin(calls: dict, repeats: int, warmup: int, device: str) -> dict:
    """Per-call seconds for each callable; the callables take turns so that load hits them alike."""
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    synchronize(device)
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            synchronize(device)
            t0 = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append(time.perf_counter() - t0)
    return times


def summarize(seconds: list, batch: int) -> dict:
    s = sorted(seconds)
    median = s[len(s) // 2] if len(s) % 2 else 0.5 * (s[len(s) // 2 - 1] + s[len(s) // 2])
    return {"median_ms": median * 1e3, "min_ms": s[0] * 1e3, "max_ms": s[-1] * 1e3, "reps": len(s),
            "images_per_s": batch / median}


# --------------------------------------------------------------------------------------------------
# One case: a size and a batch, every variant and mode
# --------------------------------------------------------------------------------------------------


def run_case(variants: dict, size: int, batch: int, args, failures: dict, first_call: dict) -> list:
    """Rows for one (size, batch); `failures` and `first_call` (seconds of each first call: compiles,
    graph captures, exports) are filled in."""
    gen = torch.Generator().manual_seed(size * 1000 + batch)
    x_in = (torch.rand(batch, 3, size, size, generator=gen) * 2 - 1).to(args.device)
    x_ex = (torch.rand(batch, 3, size, size, generator=gen) * 2 - 1).to(args.device)
    calls, outputs = {}, {}
    with torch.inference_mode():
        for name, v in variants.items():
            try:
                code = v.encode(x_ex[:1])  # one exemplar serves the batch
                modes = {"new": (lambda v=v: v.new(x_in, x_ex)),
                         "cached": (lambda v=v, code=code: v.cached(x_in, code))}
                if v.has_repeat:
                    parts = v.split(x_in, x_ex)
                    modes["repeat"] = lambda v=v, parts=parts: v.repeat(x_in, parts)
                for mode, fn in modes.items():
                    started = time.perf_counter()
                    outputs[(name, mode)] = fn().float().cpu()  # first call: compiles / captures / exports
                    first_call[f"{name} {mode} {size}x{size} batch {batch}"] = round(time.perf_counter() - started, 2)
                    calls[(name, mode)] = fn
            except Exception as exc:  # noqa: BLE001
                failures[f"{name} {size}x{size} batch {batch}"] = _short(exc)
        times = time_round_robin(calls, args.repeats, args.warmup, args.device)
    rows = []
    for (name, mode), seconds in times.items():
        row = {"size": size, "batch": batch, "variant": name, "mode": mode, **summarize(seconds, batch)}
        reference = outputs.get(("eager", mode if mode != "repeat" else "new"))
        row["max_abs_err_vs_eager"] = None if reference is None else \
            (outputs[(name, mode)] - reference).abs().max().item()
        rows.append(row)
    for row in rows:
        same = next((r for r in rows if r["variant"] == "eager" and r["mode"] == row["mode"]), None)
        new = next((r for r in rows if r["variant"] == "eager" and r["mode"] == "new"), None)
        row["speedup_vs_eager_same_mode"] = same["median_ms"] / row["median_ms"] if same else None
        row["speedup_vs_eager_new"] = new["median_ms"] / row["median_ms"] if new else None
    return rows


# --------------------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------------------


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return cpu_model()


def versions() -> dict:
    found = {"torch": torch.__version__, "python": platform.python_version()}
    for package in ("onnxruntime", "onnx", "triton"):
        try:
            found[package] = __import__(package).__version__
        except Exception:  # noqa: BLE001
            found[package] = None
    return found


def load_average():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


# --------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------


def print_table(rows: list) -> None:
    header = (f"{'size':>5s} {'batch':>5s} {'variant':12s} {'mode':7s} {'median ms':>10s} {'min':>9s} {'max':>9s} "
              f"{'img/s':>8s} {'x eager':>8s} {'x e.new':>8s} {'max err':>9s}")
    print(header)
    for r in rows:
        def ratio(key):
            return f"{r[key]:8.2f}" if r[key] is not None else f"{'-':>8s}"

        err = f"{r['max_abs_err_vs_eager']:9.2e}" if r["max_abs_err_vs_eager"] is not None else f"{'-':>9s}"
        print(f"{r['size']:5d} {r['batch']:5d} {r['variant']:12s} {r['mode']:7s} {r['median_ms']:10.1f} "
              f"{r['min_ms']:9.1f} {r['max_ms']:9.1f} {r['images_per_s']:8.2f} {ratio('speedup_vs_eager_same_mode')} "
              f"{ratio('speedup_vs_eager_new')} {err}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    parser.add_argument("--model", default="paper", choices=("paper", "tiny"))
    parser.add_argument("--compat", default="paper", choices=("paper", "official"))
    parser.add_argument("--sizes", nargs="+", type=int, default=[128, 256])
    parser.add_argument("--batches", nargs="+", type=int, default=None,
                        help="batch sizes (default: 1 8 on CPU, 1 8 32 64 on CUDA)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=None,
                        help="default: eager fused fused_direct fused_bf16 compile onnxruntime (CPU), fused_fp16 on CUDA")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="modes to report")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per variant and mode")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls first (after the first call)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/...)")
    args = parser.parse_args(argv)

    kind = "cuda" if args.device.startswith("cuda") else "cpu"
    if kind == "cuda" and not torch.cuda.is_available():
        print("--device cuda asked for, but torch.cuda is not available", file=sys.stderr)
        return 1
    if args.threads:
        torch.set_num_threads(args.threads)
    batches = args.batches or list(DEFAULT_BATCHES[kind])
    names = args.variants or list(DEFAULT_VARIANTS[kind])
    if "eager" not in names:
        names = ["eager", *names]  # the baseline of every ratio and error
    started = _dt.datetime.now(_dt.timezone.utc)
    load_before = load_average()

    g = make_generator(args.model, args.compat)
    variants, failures, build_seconds, first_call = {}, {}, {}, {}
    for name in names:
        variant, seconds, why = build_variant(name, g, args.device)
        build_seconds[name] = round(seconds, 2)
        if variant is None:
            failures[name] = why
            print(f"{name}: not run ({why})", file=sys.stderr)
        else:
            variants[name] = variant

    rows = []
    for size in args.sizes:
        for batch in batches:
            case = [r for r in run_case(variants, size, batch, args, failures, first_call) if r["mode"] in args.modes]
            print_table(case)
            print(flush=True)
            rows.extend(case)

    info = versions()
    result = {
        "benchmark": "e2e",
        "device": args.device,
        "device_name": device_name(args.device),
        "versions": info,
        "threads": torch.get_num_threads() if kind == "cpu" else None,
        "logical_cpus": os.cpu_count(),
        "date": started.isoformat(timespec="seconds"),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "model": {"preset": args.model, "compat": args.compat, "parameters": count_parameters(g),
                  "weights": "random, norm affines and running statistics randomised"},
        "measured": "generator level: tensors in, tensors out on the device; pre/post-processing excluded",
        "sizes": args.sizes, "batches": batches, "repeats": args.repeats, "warmup": args.warmup,
        "variants": list(variants), "build_seconds": build_seconds, "first_call_seconds": first_call,
        "fused_op_backend": variants["fused"].generator.op_backend if "fused" in variants else None,
        "failures": failures,
        "rows": rows,
    }
    date = started.date().isoformat()
    out = args.out or ROOT / "benchmarks" / "results" / f"e2e_{kind}_{date}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    if failures:
        print("failures / notes:", json.dumps(failures, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
