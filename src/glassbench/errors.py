"""The exceptions of glassbench, independent of any user interface.

Library code raises these with the *names of fields* (``x``, ``quench_rate_k_ps``, a file and
its line), never with command-line flags: a run started from a campaign spec or from Python must
not report a flag the user never typed. ``glassbench.cli`` is the one place that maps them to
exit statuses (``BadInput`` 2, everything else 1) and, where a field came from an option, to the
option's flag. See docs/architecture.md, "Errors".
"""

from __future__ import annotations


class GlassbenchWarning(UserWarning):
    """Warnings raised by glassbench itself (tests turn them into errors)."""


class GlassbenchError(Exception):
    """Base of every error glassbench raises on purpose; ``str()`` is the one-line message.

    ``source`` is what the bad value came from (a file path, or None for a parameter),
    ``where`` the place inside it (``line 12``, ``frame 3``), ``field`` the name of the field or
    parameter (``x``, ``quench_rate_k_ps``, ``matrix.seeds``).
    """

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        field: str | None = None,
        where: str | None = None,
    ) -> None:
        self.detail = message
        self.source = source
        self.field = field
        self.where = where
        super().__init__(self.render())

    def render(self, field_label: str | None = None) -> str:
        """The one-line message; ``field_label`` replaces the field's name (the CLI's flag)."""
        location = ":".join(p for p in (self.source, self.where) if p)
        label = field_label or self.field
        head = ": ".join(p for p in (location, label) if p)
        return f"{head}: {self.detail}" if head else self.detail

    @property
    def message(self) -> str:
        return str(self)

    def format_message(self) -> str:
        """The one-line message (the name click's exceptions use for it)."""
        return str(self)


class BadInput(GlassbenchError):
    """Bad user input: one line naming the file and field; exit status 2, nothing written."""

    exit_code = 2


class Failure(GlassbenchError):
    """Anything else that went wrong, with its cause: exit status 1."""

    exit_code = 1


def first_line(exc: BaseException | str | None) -> str:
    """The first line of an error (a database driver's ``orig`` error when there is one)."""
    if exc is None:
        return ""
    if isinstance(exc, str):
        text = exc.strip()
        return text.splitlines()[0] if text else ""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
