"""backforth: instruction back-and-forth translation (Nguyen et al., 2024) as a toolkit and a command line."""

__version__ = "0.1.0"
