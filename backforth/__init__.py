"""backforth: instruction back-and-forth translation (Nguyen et al., 2024) as a toolkit and a command line."""

import logging

__version__ = "0.1.0"

# A library call prints nothing unless the program configures logging (the CLI does, `console.py`).
logging.getLogger("backforth").addHandler(logging.NullHandler())
