"""Quality benchmark: several generators side by side on the same held-out synthetic pairs.

    python benchmarks/bench_quality.py                                   # the embedded default model
    python benchmarks/bench_quality.py --baseline runs/global_tiny       # ... and a global-AdaIN baseline
    python benchmarks/bench_quality.py --model lomit=lmt_fast/assets/default --model global=runs/global_tiny
    python benchmarks/bench_quality.py --pairs 64 --out-dir /tmp/quality  # a quick look

Every model is scored by `lmt_train.evaluate.evaluate` (see its docstring for the metrics) on the same
pairs: same count, seed, split and size (default: the first model's image_size), so the rows compare.
Besides one row per model the table has two reference rows: identity (output = input, what no translation
scores) and ground truth (output = target, the best possible score).

A model is a checkpoint directory, a .safetensors file or a training run directory (a run whose top has
no model yet is read from the checkpoint its `latest` file names, else its newest checkpoints/step_*).

Results: <out-dir>/quality_<date>.json (date, versions, machine, the command line, pairs, seed, each
model's info and metric summaries, the reference rows) and quality_<date>.md beside it (the table).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lmt_train.evaluate import EvalReport, comparison_markdown, evaluate  # noqa: E402

DEFAULT_MODEL = ROOT / "lmt_fast" / "assets" / "default"


def parse_models(specs: list[str], baseline: str | None) -> dict[str, str]:
    """--model NAME=PATH (or PATH, named after its last component) and --baseline PATH -> {name: path}."""
    models: dict[str, str] = {}
    for spec in specs or [f"lomit={DEFAULT_MODEL}"]:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = Path(spec).name or spec, spec
        if not name or not path:
            raise SystemExit(f"bench_quality: --model takes NAME=PATH, got {spec!r}")
        if name in models:
            raise SystemExit(f"bench_quality: two models are named {name!r}")
        models[name] = path
    if baseline:
        models.setdefault("baseline", baseline)
    return models


def machine() -> dict:
    """Where the numbers were computed (quality does not depend on it, but speeds in `seconds` do)."""
    info = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def versions() -> dict:
    import numpy

    import lmt_fast

    found = {"torch": torch.__version__, "numpy": numpy.__version__,
             "lmt_fast": getattr(lmt_fast, "__version__", None) or _installed_version("lmt_fast")}
    try:
        import skimage

        found["scikit-image"] = skimage.__version__
    except ImportError:
        found["scikit-image"] = None
    return found


def _installed_version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def result_document(reports: dict[str, EvalReport], started: _dt.datetime, argv: list[str]) -> dict:
    first = next(iter(reports.values()))
    return {
        "benchmark": "quality",
        "date": started.isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in ["python", "benchmarks/bench_quality.py", *argv]),
        "versions": versions(),
        "machine": machine(),
        "pairs": first.pairs,
        "seed": first.seed,
        "split": first.split,
        "image_size": first.image_size,
        "hair_colours": first.hair_colours,
        "psnr_cap_db": first.psnr_cap_db,
        "models": {name: {k: v for k, v in r.to_dict().items() if k not in ("references", "definitions")}
                   for name, r in reports.items()},
        "references": first.to_dict()["references"],
        "definitions": first.to_dict()["definitions"],
    }


def markdown_document(doc: dict, reports: dict[str, EvalReport]) -> str:
    lines = [f"# Quality benchmark, {doc['date'][:10]}", "",
             f"`{doc['command']}`", "",
             f"torch {doc['versions']['torch']}, lmt_fast {doc['versions']['lmt_fast']}; "
             f"{doc['machine']['cpu']}" + (f", {doc['machine']['gpu']}" if "gpu" in doc["machine"] else ""),
             "", "Models:", ""]
    for name, report in reports.items():
        m = report.model
        params = f"{m.parameters:,} parameters" if m.parameters is not None else "parameters unknown"
        lines.append(f"- {name}: `{m.path}` (mask_mode {m.mask_mode}, {params}, step {m.step}, "
                     f"{report.seconds:.1f} s)")
    return "\n".join(lines) + "\n\n" + comparison_markdown(reports)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                        help="a model to score (repeatable; default: lomit=lmt_fast/assets/default)")
    parser.add_argument("--baseline", metavar="PATH", help="add this checkpoint as the row 'baseline'")
    parser.add_argument("--pairs", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", default="test", choices=("test", "val", "train"))
    parser.add_argument("--size", type=int, help="render and translate at this size (default: the first "
                        "model's image_size)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bars (default: when stderr is a terminal)")
    args = parser.parse_args(argv)
    models = parse_models(args.model, args.baseline)
    progress = sys.stderr.isatty() if args.progress is None else args.progress

    started = _dt.datetime.now()
    reports: dict[str, EvalReport] = {}
    size = args.size
    for name, path in models.items():
        print(f"bench_quality: {name} = {path}", file=sys.stderr)
        try:
            report = evaluate(path, pairs=args.pairs, size=size, seed=args.seed, split=args.split,
                              batch_size=args.batch_size, device=args.device, progress=progress)
        except (ValueError, ImportError) as exc:  # bad checkpoint, device, size, missing scikit-image
            raise SystemExit(f"bench_quality: {name}: {exc}") from None
        size = report.image_size  # every later model runs on the first model's pairs
        report.model.name = name
        reports[name] = report

    doc = result_document(reports, started, argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / f"quality_{started.date().isoformat()}.json"
    out.write_text(json.dumps(doc, indent=1) + "\n")
    table = markdown_document(doc, reports)
    out.with_suffix(".md").write_text(table)
    print(table)
    print(f"bench_quality: wrote {out} and {out.with_suffix('.md')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
