"""Render benchmark JSON (bench_e2e.py) as a Markdown table and an SVG bar chart, with no plotting library.

    python benchmarks/plot_results.py benchmarks/results/e2e_cpu_<date>.json   # .md and .svg beside it
    python benchmarks/plot_results.py RESULT.json --out-dir /tmp

The chart shows, per (size, batch), the median time of each variant and mode relative to eager with a
new exemplar (bars: speed-up, longer is faster); the table holds every number of the JSON rows.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

COLOURS = {"new": "#4C72B0", "cached": "#DD8452", "repeat": "#55A868"}
BAR_H, GAP, LEFT, WIDTH = 14, 6, 260, 420


def markdown(result: dict) -> str:
    lines = [f"# e2e benchmark: {result['device_name']} ({result['device']}), {result['date']}",
             "",
             f"Model {result['model']['preset']} ({result['model']['parameters']:,} parameters), torch "
             f"{result['versions']['torch']}, onnxruntime {result['versions'].get('onnxruntime')}, threads "
             f"{result.get('threads')}; {result['measured']}.",
             "",
             "| size | batch | variant | mode | median ms | min | max | img/s | x eager (same mode) | x eager new "
             "| max err |",
             "|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        def num(key, fmt):
            return format(r[key], fmt) if r.get(key) is not None else "-"

        lines.append(f"| {r['size']} | {r['batch']} | {r['variant']} | {r['mode']} | {num('median_ms', '.1f')} | "
                     f"{num('min_ms', '.1f')} | {num('max_ms', '.1f')} | {num('images_per_s', '.2f')} | "
                     f"{num('speedup_vs_eager_same_mode', '.2f')} | {num('speedup_vs_eager_new', '.2f')} | "
                     f"{num('max_abs_err_vs_eager', '.1e')} |")
    if result.get("failures"):
        lines += ["", "Not run / failures:", ""] + [f"- {k}: {v}" for k, v in result["failures"].items()]
    return "\n".join(lines) + "\n"


def svg(result: dict) -> str:
    rows = [r for r in result["rows"] if r.get("speedup_vs_eager_new")]
    top = max((r["speedup_vs_eager_new"] for r in rows), default=1.0)
    parts, y = [], 30
    for case in dict.fromkeys((r["size"], r["batch"]) for r in rows):
        parts.append(f'<text x="4" y="{y + 10}" font-weight="bold">{case[0]}² batch {case[1]}</text>')
        y += BAR_H + GAP
        for r in (r for r in rows if (r["size"], r["batch"]) == case):
            w = WIDTH * r["speedup_vs_eager_new"] / top
            label, colour = f'{r["variant"]} / {r["mode"]}', COLOURS.get(r["mode"], "#888")
            parts.append(f'<text x="{LEFT - 6}" y="{y + BAR_H - 3}" text-anchor="end">{label}</text>')
            parts.append(f'<rect x="{LEFT}" y="{y}" width="{w:.1f}" height="{BAR_H}" fill="{colour}"/>')
            parts.append(f'<text x="{LEFT + w + 4:.1f}" y="{y + BAR_H - 3}">{r["speedup_vs_eager_new"]:.2f}x '
                         f'({r["median_ms"]:.1f} ms)</text>')
            y += BAR_H + 2
        y += GAP
    title = f"speed-up vs eager, new exemplar: {result['device_name']}, {result['date'][:10]}"
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{LEFT + WIDTH + 140}" height="{y + 10}" '
            f'font-family="sans-serif" font-size="11"><text x="4" y="16" font-size="13">{title}</text>'
            + "".join(parts) + "</svg>\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="bench_e2e.py JSON files")
    parser.add_argument("--out-dir", type=Path, default=None, help="default: beside each JSON file")
    args = parser.parse_args(argv)
    for path in args.results:
        result = json.loads(path.read_text())
        if result.get("benchmark") != "e2e":
            print(f"{path}: not an e2e result (benchmark={result.get('benchmark')!r}); skipped")
            continue
        folder = args.out_dir or path.parent
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{path.stem}.md").write_text(markdown(result))
        (folder / f"{path.stem}.svg").write_text(svg(result))
        print(f"wrote {folder / (path.stem + '.md')} and {folder / (path.stem + '.svg')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
