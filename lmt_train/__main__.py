import sys

from lmt_train.cli import main

sys.exit(main())
