"""`python -m k2_ops.simulator ...` runs the same command as `k2 simulator ...`."""

import sys

from .cli import main

sys.exit(main())
