"""`python -m selftrain ...`: the `selftrain` command."""

import sys

from selftrain.cli import main

sys.exit(main())
