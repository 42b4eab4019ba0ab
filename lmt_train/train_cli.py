"""What the `train` commands of `lmt-train` (LOMIT) and `lmt-train mgst` share: their config and run
options, the resumed run's own config, and the closing report."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lmt_train.runs import TRAIN_CONFIG_FILE


def add_run_arguments(p: argparse.ArgumentParser, config_help: str, set_help: str) -> None:
    """--config, --set, --resume, --run-dir (the shortcuts and --print-config are added by each command)."""
    p.add_argument("--config", metavar="FILE", help=config_help)
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides", help=set_help)
    p.add_argument("--resume", nargs="?", const="latest", metavar="CHECKPOINT",
                   help="continue from the run directory's latest checkpoint (or from CHECKPOINT)")
    p.add_argument("--run-dir", metavar="DIR", help="where checkpoints, logs and samples go")


def resumed_base(args, default_run_dir: str) -> dict | None:
    """With --resume and no --config: the run's own train_config.json (the run directory from --run-dir,
    else a --set run_dir=..., else the config's default)."""
    if not args.resume or args.config:
        return None
    run_dir = args.run_dir
    if run_dir is None:
        for item in args.overrides:
            key, _, value = item.partition("=")
            if key.strip() == "run_dir":
                run_dir = value.strip().strip('"')
    saved = Path(run_dir or default_run_dir) / TRAIN_CONFIG_FILE
    if not saved.is_file():
        return None
    return json.loads(saved.read_text())


def report_end(prog: str, result, detail: str, load_hint: str, train_command: str, quiet: bool = False) -> int:
    """Say how a run ended, where its checkpoint is and how to continue an interrupted one; returns the exit
    status (130 after an interruption, as for SIGINT)."""
    if not quiet:
        speed = f", {result.seconds_per_iteration:.3f} s/iteration" if result.seconds_per_iteration else ""
        state = "interrupted at" if result.interrupted else "finished"
        print(f"{prog}: {state} step {result.step}{speed}{detail}; checkpoint {result.checkpoint}; "
              f"{load_hint}({str(result.run_dir)!r})", file=sys.stderr)
        if result.interrupted:
            print(f"{prog}: continue with: {train_command} --run-dir {result.run_dir} --resume", file=sys.stderr)
    return 130 if result.interrupted else 0
