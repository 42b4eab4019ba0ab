"""Benchmark MGST purification on held-out procedural "real" eyes; writes JSON + Markdown to benchmarks/results/.

Measured per method (synthetic reference, raw real, MGST, global baseline):
  * pupil-centre error (pixels) of a regressor trained on synthetic eyes only: the *independent* one
    (another seed and width than the task regressor MGST was trained against: the fair measure) and the
    *task* regressor itself;
  * region-wise style distance to the synthetic domain (attention = iris + pupil, background): Fréchet
    distance of per-image region moments under an evaluation-only random conv net, and the paired moment
    distance to each eye's own clean rendering;
  * geometry preservation: pupil IoU of a segmenter trained on synthetic eyes against the true pupil;
  * L1 to the paired clean rendering; purification speed (CPU, this process's threads).
See lmt_train/mgst/evaluate.py for the exact definitions.

    python benchmarks/bench_purify.py --baseline runs/mgst_global \\
        --task-regressor runs/mgst/regressor --independent-regressor runs/mgst_eval_regressor \\
        --segmenter runs/mgst_segmenter
    (the networks come from: lmt-train mgst train ...; lmt-train mgst regressor -o runs/mgst_eval_regressor
     --set seed=1 --set width=24; lmt-train mgst regressor --kind segmenter -o runs/mgst_segmenter
     --set iterations=600 --set batch_size=32; see lmt_fast/assets/mgst/README.md)
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _speed(generator, size, batch: int, repeats: int = 5) -> float:
    """Milliseconds per image of generator(x, m) at `batch` (median of `repeats`)."""
    x = torch.rand(batch, 3, *size) * 2 - 1
    m = torch.zeros(batch, 1, *size)
    m[:, :, size[0] // 4:size[0] // 2, size[1] // 3:size[1] // 2] = 1
    times = []
    with torch.inference_mode():
        generator(x, m)
        for _ in range(repeats):
            start = time.perf_counter()
            generator(x, m)
            times.append(time.perf_counter() - start)
    return round(sorted(times)[len(times) // 2] / batch * 1000, 3)


def _relative(path) -> str:
    """A path relative to the repository when it lies inside it (results stay machine-independent)."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(path)


def main(argv=None) -> int:
    import lmt_fast
    from lmt_fast.models.mgst import count_parameters, load_mgst_checkpoint
    from lmt_fast.purifier import DEFAULT_MODEL
    from lmt_train.mgst.evaluate import evaluate, markdown_table
    from lmt_train.mgst.regressor import load_network

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mgst", default=str(DEFAULT_MODEL), help="MGST checkpoint (default: the embedded model)")
    parser.add_argument("--baseline", help="the global baseline's checkpoint")
    parser.add_argument("--task-regressor", required=True, help="the regressor MGST's task loss used")
    parser.add_argument("--independent-regressor", help="a regressor trained separately (the fair measure)")
    parser.add_argument("--segmenter", help="pupil segmenter (for the pupil IoU)")
    parser.add_argument("--count", type=int, default=500, help="test eyes (default 500)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="output folder")
    parser.add_argument("--tag", default="cpu", help="file name tag (purify_<tag>_<date>.json)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    purifiers, models = {}, {}
    for name, path in (("MGST (regions)", args.mgst), ("global baseline", args.baseline)):
        if not path:
            continue
        ckpt = load_mgst_checkpoint(path)
        ckpt.generator.set_backend("auto")
        purifiers[name] = ckpt.generator
        extra = ckpt.metadata.get("extra", {})
        models[name] = {"path": _relative(path), "config": ckpt.config.to_dict(), "step": extra.get("step"),
                        "parameters": count_parameters(ckpt.generator),
                        "stored_style_images": int(ckpt.generator.style_images),
                        "training_validation": extra.get("validation")}
    regressors = {}
    if args.independent_regressor:
        regressors["independent"] = load_network(args.independent_regressor)
    regressors["task"] = load_network(args.task_regressor)
    segmenter = load_network(args.segmenter, "segmenter") if args.segmenter else None
    size = tuple(next(iter(purifiers.values())).config.image_size)

    started = time.perf_counter()
    result = evaluate(purifiers, regressors, segmenter, count=args.count, size=size)
    seconds = time.perf_counter() - started
    speed = {name: {"ms_per_image_batch1": _speed(g, size, 1), "ms_per_image_batch64": _speed(g, size, 64)}
             for name, g in purifiers.items()}
    networks = {name: {"path": _relative(p), "report": load_network(p, kind).header.get("extra", {}).get("report")}
                for name, p, kind in (("independent regressor", args.independent_regressor, "regressor"),
                                      ("task regressor", args.task_regressor, "regressor"),
                                      ("segmenter", args.segmenter, "segmenter")) if p}
    today = datetime.date.today().isoformat()
    record = {
        "benchmark": "bench_purify",
        "date": today,
        "command": " ".join(shlex.quote(a) for a in [sys.executable.split("/")[-1], *sys.argv]),
        "versions": {"lmt_fast": lmt_fast.__version__, "torch": torch.__version__, "python": platform.python_version(),
                     "numpy": __import__("numpy").__version__},
        "device": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                   "op_backend": next(iter(purifiers.values())).backend},
        "models": models,
        "networks": networks,
        "evaluation_seconds": round(seconds, 1),
        "speed": speed,
        **result,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"purify_{args.tag}_{today}"
    stem.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    table = markdown_table(result, tuple(regressors))
    lines = [f"# MGST purification benchmark ({today})", "",
             f"`{record['command']}`", "",
             f"lmt_fast {lmt_fast.__version__}, torch {torch.__version__}, Python {platform.python_version()}, "
             f"CPU, {torch.get_num_threads()} thread(s). {args.count} held-out procedural eyes (split \"test\"), "
             f"36x60.", "", table, "",
             "Pupil error: mean Euclidean error (pixels) of the pupil centre predicted by a regressor trained on "
             "synthetic eyes only. *independent*: a regressor MGST never saw (fair); *task*: the frozen regressor "
             "of MGST's task-guided loss (optimistic for the purifiers). Style FD: Fréchet distance of per-image "
             "region moments (evaluation random conv net) to an independent synthetic set (lower = more "
             "synthetic-looking); paired: moment distance to the same eye's clean rendering. Pupil IoU: segmenter "
             "trained on synthetic eyes vs the true pupil. L1 to clean: mean |image - clean rendering| in [0, 1].",
             "", "Paired differences of the pupil error on the same eyes (negative: the first method is better):", "",
             "| comparison | mean difference (px) | standard error | first better on |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['mean_px']:+.3f} | {v['sem_px']:.3f} | {100 * v['first_better_share']:.0f}% of eyes |"
              for k, v in result["paired_error_differences"].items()]
    lines += ["", "| method | ms / image (batch 1) | ms / image (batch 64) |", "|---|---|---|"]
    lines += [f"| {name} | {s['ms_per_image_batch1']} | {s['ms_per_image_batch64']} |" for name, s in speed.items()]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(table)
    print(f"wrote {stem.with_suffix('.json')} and {stem.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
