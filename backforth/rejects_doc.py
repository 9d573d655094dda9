"""`backforth rejects-doc`: print docs/rejects.md (every reject reason, what it means, what to try).

A module of its own so that the CLI registers the command without importing the config and the
stages on every start; the page itself is made by `backforth.docs.rejects_markdown`.
"""

from __future__ import annotations

import typer


def rejects_doc_command() -> None:
    """Print every reject reason of every stage with what it means and what to try (markdown)."""
    from .docs import rejects_markdown

    typer.echo(rejects_markdown(), nl=False)
