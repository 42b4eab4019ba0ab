import sys

from lmt_train.mgst.cli import main

sys.exit(main())
