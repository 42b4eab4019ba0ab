"""`python -m lmt_train ...` (also what `torchrun -m lmt_train train ...` runs on every rank)."""
import sys

from lmt_train.cli import main

if __name__ == "__main__":
    sys.exit(main())
