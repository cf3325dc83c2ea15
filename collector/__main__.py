"""`python -m collector` runs the `l2-collector` command line."""

import sys

from collector.cli import main

sys.exit(main())
