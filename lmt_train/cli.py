"""lmt-train: train LOMIT models (train) and preview the synthetic dataset (synthetic).

    lmt-train train --config configs/tiny_synthetic.toml --set iterations=2000 --run-dir runs/tiny
    lmt-train train --run-dir runs/tiny --resume                 # continue from runs/tiny/latest
    torchrun --nproc-per-node 2 -m lmt_train train --config ...  # one process per GPU (gloo on CPUs)

Configuration: the file (TOML or JSON; see configs/), then `--set key=value` overrides, then the
shortcut flags (--run-dir, --dataset, --data-path, --iterations, --device). With --resume and no
--config, the run directory's train_config.json is the starting point.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

PROG = "lmt-train"


class UserError(Exception):
    """Reported as one line `lmt-train: error: ...` with exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        raise UserError(message)


def _train_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("train", help="train a LOMIT generator and discriminator",
                       description="Train LOMIT (the official objective and schedule by default).")
    p.add_argument("--config", metavar="FILE", help="TOML or JSON training config (see configs/)")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                   help="override a config value, e.g. --set lr=2e-4 --set model.base_dim=16 (repeatable)")
    p.add_argument("--resume", nargs="?", const="latest", metavar="CHECKPOINT",
                   help="continue from the run directory's latest checkpoint (or from CHECKPOINT)")
    p.add_argument("--run-dir", metavar="DIR", help="where checkpoints, logs and samples go")
    p.add_argument("--dataset", choices=("synthetic", "celeba", "folder"), help="shortcut for data.kind")
    p.add_argument("--data-path", metavar="PATH", help="shortcut for data.path")
    p.add_argument("--iterations", type=int, metavar="N", help="shortcut for iterations")
    p.add_argument("--device", metavar="DEVICE", help="shortcut for device (auto, cpu, cuda, cuda:1)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _Parser(prog=PROG, description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", title="commands", parser_class=_Parser)
    sub.add_parser("synthetic", add_help=False,
                   help="write a preview grid (and with --samples the PNGs) of synthetic translation pairs")
    _train_parser(sub)
    try:
        if argv[:1] == ["synthetic"]:  # its own parser reads the remaining arguments
            from lmt_train.data import synthetic

            synthetic.main(argv[1:])
            return 0
        args = parser.parse_args(argv)
        if args.command == "train":
            return _train(args)
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
        config = load_config(args.config, _overrides(args), base=_resumed_base(args))
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
    if trainer.ctx.is_main:
        speed = f", {result.seconds_per_iteration:.3f} s/iteration" if result.seconds_per_iteration else ""
        state = "interrupted at" if result.interrupted else "finished"
        print(f"{PROG}: {state} step {result.step}{speed}; checkpoint {result.checkpoint}; "
              f"load the generator with Translator.load({str(result.run_dir)!r})", file=sys.stderr)
        if result.interrupted:
            print(f"{PROG}: continue with: lmt-train train --run-dir {result.run_dir} --resume", file=sys.stderr)
    return 130 if result.interrupted else 0


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


def _resumed_base(args) -> dict | None:
    """With --resume and no --config: the run's own train_config.json."""
    import json

    from lmt_train.trainer import TRAIN_CONFIG_FILE

    if not args.resume or args.config:
        return None
    run_dir = args.run_dir
    if run_dir is None:
        for item in args.overrides:
            key, _, value = item.partition("=")
            if key.strip() == "run_dir":
                run_dir = value.strip().strip('"')
    saved = Path(run_dir or "runs/lomit") / TRAIN_CONFIG_FILE
    if not saved.is_file():
        return None
    return json.loads(saved.read_text())


if __name__ == "__main__":
    sys.exit(main())
