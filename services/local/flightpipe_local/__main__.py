"""`python -m flightpipe_local`: the `flightpipe` command line."""

import sys

from flightpipe_local.cli import main

sys.exit(main())
