"""lmt-train: train LOMIT models (train), evaluate them (eval) and preview the synthetic dataset (synthetic).

    lmt-train train --config configs/tiny_synthetic.toml --set iterations=2000 --run-dir runs/tiny
    lmt-train train --run-dir runs/tiny --resume                 # continue from runs/tiny/latest
    torchrun --nproc-per-node 2 -m lmt_train train --config ...  # one process per GPU (gloo on CPUs)
    lmt-train eval runs/tiny --pairs 256 --json eval.json        # quality on held-out synthetic pairs

Configuration: the file (TOML or JSON; see configs/), then `--set key=value` overrides, then the
shortcut flags (--run-dir, --dataset, --data-path, --iterations, --device). With --resume and no
--config, the run directory's train_config.json is the starting point.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lmt_train.train_cli import add_run_arguments, report_end, resumed_base

PROG = "lmt-train"


class UserError(Exception):
    """Reported as one line `lmt-train: error: ...` with exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        raise UserError(message)


def _train_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("train", help="train a LOMIT generator and discriminator",
                       description="Train LOMIT (the official objective and schedule by default).")
    add_run_arguments(p, "TOML or JSON training config (see configs/)",
                      "override a config value, e.g. --set lr=2e-4 --set model.base_dim=16 (repeatable)")
    p.add_argument("--dataset", choices=("synthetic", "celeba", "folder"), help="shortcut for data.kind")
    p.add_argument("--data-path", metavar="PATH", help="shortcut for data.path")
    p.add_argument("--iterations", type=int, metavar="N", help="shortcut for iterations")
    p.add_argument("--device", metavar="DEVICE", help="shortcut for device (auto, cpu, cuda, cuda:1)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    return p


def _eval_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("eval", help="score a checkpoint on held-out synthetic translation pairs",
                       description="Score a generator on held-out synthetic translation pairs (hair colour "
                                   "error, background PSNR, mask IoU, PSNR/SSIM vs the exact target) and "
                                   "print a Markdown table; see lmt_train.evaluate.")
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="checkpoint directory or .safetensors file (a run directory works too)")
    p.add_argument("--pairs", type=int, default=256, metavar="N", help="number of pairs (default 256)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the pairs (default 0)")
    p.add_argument("--split", default="test", choices=("test", "val", "train"), help="default test")
    p.add_argument("--size", type=int, metavar="PX", help="render and translate at PX (default: the model's size)")
    p.add_argument("--batch-size", type=int, default=16, metavar="B", help="pairs per forward (default 16)")
    p.add_argument("--device", default="cpu", metavar="DEVICE", help="cpu (default), cuda, cuda:1")
    p.add_argument("--backend", default="auto", metavar="NAME", help="op backend (default auto)")
    p.add_argument("--json", metavar="OUT.json", help="also write the report as JSON (with per-pair values)")
    p.add_argument("--markdown", metavar="OUT.md", help="also write the table as Markdown")
    p.add_argument("--grid", metavar="OUT.png", help="write a PNG of the first pairs: input | exemplar | "
                   "output | target | learned mask | true mask")
    p.add_argument("--grid-pairs", type=int, default=4, metavar="N", help="rows of the grid (default 4)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show a progress bar (default: when stderr is a terminal)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _Parser(prog=PROG, description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", title="commands", parser_class=_Parser)
    sub.add_parser("synthetic", add_help=False,
                   help="write a preview grid (and with --samples the PNGs) of synthetic translation pairs")
    _train_parser(sub)
    _eval_parser(sub)
    from lmt_train.mgst import cli as mgst_cli

    mgst_cli.add_parser(sub)
    try:
        if argv[:1] == ["synthetic"]:  # its own parser reads the remaining arguments
            from lmt_train.data import synthetic

            synthetic.main(argv[1:])
            return 0
        args = parser.parse_args(argv)
        if args.command == "train":
            return _train(args)
        if args.command == "eval":
            return _eval(args)
        if args.command == "mgst":
            return mgst_cli.run(args)
        parser.print_help()
        return 2
    except UserError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2


def _train(args) -> int:
    import json

    from lmt_fast.io import CheckpointError
    from lmt_train.config import ConfigError, load_config
    from lmt_train.data.folder import DatasetError
    from lmt_train.trainer import Trainer, TrainingError

    try:
        config = load_config(args.config, _overrides(args), base=resumed_base(args, "runs/lomit"))
        if args.print_config:
            print(json.dumps(config.to_dict(), indent=2))
            return 0
        trainer = Trainer(config, resume=args.resume)
        result = trainer.fit()
    except (ConfigError, DatasetError, TrainingError, CheckpointError) as exc:
        raise UserError(str(exc)) from None
    except RuntimeError as exc:
        if "CUDA" in str(exc) and "not available" in str(exc):
            raise UserError(str(exc)) from None
        raise
    return report_end(PROG, result, "", "load the generator with Translator.load", "lmt-train train",
                      quiet=not trainer.ctx.is_main)


def _eval(args) -> int:
    import json

    from lmt_fast.io import CheckpointError
    from lmt_fast.translator import TranslatorError
    from lmt_train.evaluate import EvaluationError, MissingDependencyError, evaluate

    outputs = [Path(p) for p in (args.json, args.markdown) if p]
    for path in outputs:
        if path.is_dir():
            raise UserError(f"output {path} is a directory; give a file name")
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    try:
        report = evaluate(args.checkpoint, pairs=args.pairs, size=args.size, seed=args.seed, split=args.split,
                          batch_size=args.batch_size, device=args.device, backend=args.backend,
                          progress=progress, grid_path=args.grid, grid_pairs=args.grid_pairs)
    except (CheckpointError, TranslatorError, EvaluationError, MissingDependencyError) as exc:
        raise UserError(str(exc)) from None
    table = report.to_markdown()
    print(table, end="")
    try:
        if args.json:
            _write_text(args.json, json.dumps(report.to_dict(per_pair=True), indent=2) + "\n")
        if args.markdown:
            _write_text(args.markdown, table)
    except OSError as exc:
        raise UserError(f"cannot write {exc.filename}: {exc.strerror}") from None
    return 0


def _write_text(path: str, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _overrides(args) -> list[str]:
    """--set values, then the shortcut flags (which win)."""
    overrides = list(args.overrides)
    for flag, key in (("run_dir", "run_dir"), ("dataset", "data.kind"), ("data_path", "data.path"),
                      ("iterations", "iterations"), ("device", "device")):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={_quoted(value)}")
    return overrides


def _quoted(value) -> str:
    """A shortcut's value as a TOML string (paths and names stay strings even when they look like numbers)."""
    if isinstance(value, int):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


if __name__ == "__main__":
    sys.exit(main())
