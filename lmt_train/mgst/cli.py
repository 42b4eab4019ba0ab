"""`lmt-train mgst`: train and evaluate MGST purifiers of eye images.

    lmt-train mgst train --config configs/mgst_small.toml --run-dir runs/mgst
    lmt-train mgst train --config configs/mgst_global.toml --set regressor=runs/mgst/regressor
    lmt-train mgst train --run-dir runs/mgst --resume                  # continue from runs/mgst/latest
    lmt-train mgst regressor -o runs/eval_regressor --set seed=1 --set width=24
    lmt-train mgst eval --purifier mgst=runs/mgst --purifier global=runs/mgst_global \\
        --regressor task=runs/mgst/regressor --regressor independent=runs/eval_regressor
    lmt-train mgst eyes -o eyes.png                                    # preview synthetic / real eyes

Also runnable without the `lmt-train` hook: python -m lmt_train.mgst ...
Integration into lmt_train/cli.py: `from lmt_train.mgst import cli as mgst_cli`, then
`mgst_cli.add_parser(sub)` next to the other sub-commands and `if args.command == "mgst": return
mgst_cli.run(args)`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lmt_train.train_cli import add_run_arguments, report_end, resumed_base

PROG = "lmt-train mgst"


class _Parser(argparse.ArgumentParser):
    """Errors as one line `lmt-train mgst: error: ...` with exit status 2 (no usage dump)."""

    def error(self, message: str):
        print(f"{PROG}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `mgst` command (with its own sub-commands) to an argparse subparsers object."""
    p = subparsers.add_parser("mgst", help="MGST: purify real eye images with region-wise styles",
                              description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="mgst_command", title="mgst commands", parser_class=_Parser)

    t = sub.add_parser("train", help="train an MGST generator (or the global baseline)")
    add_run_arguments(t, "TOML or JSON config (see configs/mgst_*.toml)",
                      "override a config value, e.g. --set iterations=100 --set model.mask_mode=global")
    t.add_argument("--iterations", type=int, metavar="N", help="shortcut for iterations")
    t.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")

    r = sub.add_parser("regressor", help="train a pupil-centre regressor or pupil segmenter on synthetic eyes")
    r.add_argument("-o", "--output", required=True, metavar="DIR", help="directory to write the network to")
    r.add_argument("--kind", choices=("regressor", "segmenter"), default="regressor")
    r.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                   help="width, iterations, batch_size, lr, seed, synthetic_length")
    r.add_argument("--size", default="36x60", help="image size HxW (default 36x60)")

    e = sub.add_parser("eval", help="pupil error, region style distance and pupil IoU on held-out eyes")
    e.add_argument("--purifier", action="append", default=[], metavar="NAME=PATH", help="an MGST checkpoint (repeatable)")
    e.add_argument("--regressor", action="append", default=[], metavar="NAME=PATH", required=True,
                   help="a trained regressor (repeatable; name one 'independent' for the fair measure)")
    e.add_argument("--segmenter", metavar="PATH", help="a trained pupil segmenter (for the pupil IoU)")
    e.add_argument("--count", type=int, default=500, help="test eyes (default 500)")
    e.add_argument("--json", metavar="FILE", help="also write the results as JSON")

    y = sub.add_parser("eyes", help="write a preview grid of procedural eyes (synthetic / real / mask)")
    y.add_argument("-o", "--output", default="eyes_preview.png")
    y.add_argument("--count", type=int, default=8)
    y.add_argument("--seed", type=int, default=0)
    p.set_defaults(mgst_parser=p)
    return p


def run(args) -> int:
    """Run the parsed `mgst` command; user errors print one line and return 2."""
    from lmt_fast.io import CheckpointError
    from lmt_train.config_utils import ConfigError
    from lmt_train.data.folder import DatasetError
    from lmt_train.runs import TrainingError

    command = getattr(args, "mgst_command", None)
    if command is None:
        args.mgst_parser.print_help()
        return 2
    try:
        return {"train": _train, "regressor": _regressor, "eval": _eval, "eyes": _eyes}[command](args)
    except (ConfigError, DatasetError, TrainingError, CheckpointError, FileNotFoundError, ValueError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2


def _train(args) -> int:
    from lmt_train.mgst.config import load_mgst_config
    from lmt_train.mgst.trainer import MGSTTrainer

    overrides = list(args.overrides)
    if args.run_dir:
        overrides.append(f"run_dir={json.dumps(args.run_dir)}")
    if args.iterations is not None:
        overrides.append(f"iterations={args.iterations}")
    config = load_mgst_config(args.config, overrides, base=resumed_base(args, "runs/mgst"))
    if args.print_config:
        print(json.dumps(config.to_dict(), indent=2))
        return 0
    result = MGSTTrainer(config, resume=args.resume).fit()
    val = ""
    if result.validation:
        val = (f"; validation pupil error raw {result.validation['real_raw_error_px']:.3f} px -> purified "
               f"{result.validation['real_purified_error_px']:.3f} px")
    return report_end(PROG, result, val, "load it with Purifier.load", "lmt-train mgst train")


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"size must look like HxW (e.g. 36x60), got {text!r}") from None
    return h, w


def _regressor(args) -> int:
    import dataclasses

    from lmt_train.config_utils import ConfigError, parse_override
    from lmt_train.mgst.config import RegressorConfig, validate_regressor
    from lmt_train.mgst.regressor import train_network

    values = {"kind": args.kind}
    fields = {f.name for f in dataclasses.fields(RegressorConfig)}
    for item in args.overrides:
        key, value = parse_override(item)
        if key not in fields:
            raise ConfigError(f"unknown regressor key {key!r} (known: {', '.join(sorted(fields))})")
        values[key] = value
    cfg = validate_regressor(RegressorConfig(**values))
    _, report = train_network(cfg, args.output, _size(args.size))
    print(json.dumps(report))
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _named(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--{what} must look like NAME=PATH, got {item!r}")
        out[name] = path
    return out


def _eval(args) -> int:
    from lmt_fast.models.mgst import load_mgst_checkpoint
    from lmt_train.mgst.evaluate import evaluate, markdown_table
    from lmt_train.mgst.regressor import load_network

    purifiers = {name: load_mgst_checkpoint(path).generator for name, path in _named(args.purifier, "purifier").items()}
    regressors = {name: load_network(path) for name, path in _named(args.regressor, "regressor").items()}
    segmenter = load_network(args.segmenter, "segmenter") if args.segmenter else None
    sizes = {tuple(g.config.image_size) for g in purifiers.values()} | {tuple(r.image_size) for r in regressors.values()}
    if len(sizes) > 1:
        raise ValueError(f"the networks work on different image sizes: {sorted(sizes)}")
    result = evaluate(purifiers, regressors, segmenter, count=args.count, size=sizes.pop())
    print(markdown_table(result, tuple(regressors)))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _eyes(args) -> int:
    from lmt_train.data import eyes

    return eyes.main(["-o", args.output, "--count", str(args.count), "--seed", str(args.seed)])


def main(argv: list[str] | None = None) -> int:
    """`python -m lmt_train.mgst ...` (the same commands without the lmt-train hook)."""
    parser = _Parser(prog="lmt-train")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    add_parser(sub)
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] != ["mgst"]:
        argv = ["mgst"] + argv
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
