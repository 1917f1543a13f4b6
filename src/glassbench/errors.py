"""Exceptions that cross the CLI boundary.

`BadInput` is for anything the user handed us (a file, a field, an option): the CLI turns it
into a one-line message and exit status 2, with nothing written to the database.
"""

from __future__ import annotations

import click


class GlassbenchWarning(UserWarning):
    """Warnings raised by glassbench itself (tests turn them into errors)."""


class BadInput(click.ClickException):
    """Bad user input: one line naming the file and field, exit status 2."""

    exit_code = 2

    def __init__(self, message: str, *, source: str | None = None, where: str | None = None):
        parts = [p for p in (source, where) if p]
        prefix = ":".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class Failure(click.ClickException):
    """Anything else that went wrong, with its cause: exit status 1."""

    exit_code = 1
