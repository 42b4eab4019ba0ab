"""`lmt-train`: training tools. Subcommands that exist now: `synthetic` (preview and sample images)."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lmt-train", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", title="commands")
    sub.add_parser("synthetic", add_help=False,
                   help="write a preview grid (and with --samples the PNGs) of synthetic translation pairs")
    args, rest = parser.parse_known_args(argv)
    if args.command == "synthetic":
        from lmt_train.data import synthetic

        synthetic.main(rest)
        return 0
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
