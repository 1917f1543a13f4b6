"""Run a use case in an MLIP's own interpreter and get its result (or its error) back.

An MLIP registered with ``--python`` runs in that environment (docs/environments.md). The
parent starts ``python -m glassbench.runners.delegation`` there with
:func:`glassbench.runners.interpreter.run_child`: the request (which function, with
what) as JSON on stdin, the database URL in the environment (``GLASSBENCH_DATABASE_URL``),
never in argv, which ``ps`` shows to every user of the machine. The child (:func:`serve`)
writes the function's JSON result, or its ``BadInput``/``Failure``, to a file the parent
named, so its stdout and stderr stay the user's: its progress bar and warnings show as if the
run were local (stderr passes through a pipe that keeps its last lines: a child that dies
before it can answer, such as an interpreter without glassbench, is reported with its exit
status and those lines).
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from glassbench.errors import BadInput, Failure, GlassbenchError, first_line
from glassbench.runners.interpreter import child_environment, run_child

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

_ERRORS: dict[str, type[GlassbenchError]] = {"BadInput": BadInput, "Failure": Failure}


def interpreter_for(mlip: Any, notify: Callable[[str], object] | None = None) -> str | None:
    """The interpreter ``mlip`` is registered with, or None when that is this environment.

    ``notify`` (default: the log) is told in one line that the MLIP runs elsewhere.
    """
    from glassbench.runners.interpreter import same_environment

    if same_environment(mlip.python):
        return None
    python = str(mlip.python)
    if not Path(python).is_file() or not os.access(python, os.X_OK):
        problem = "does not exist" if not Path(python).exists() else "is not an executable file"
        raise Failure(f"interpreter {python} registered for MLIP {mlip.name!r} {problem}")
    (notify or log.info)(f"running MLIP {mlip.name!r} in {python}")
    return python


def call_in_interpreter(
    python: str,
    target: str,
    request: Mapping[str, Any],
    *,
    engine: Engine,
    threads: int | None = None,
) -> Any:
    """``target(engine, request)`` in ``python``: its result, or its error raised here again.

    ``target`` is ``"glassbench.module:function"``; the function takes the child's engine on
    the same database and the request, and returns something JSON can carry.
    """
    url = engine.url.render_as_string(hide_password=False)
    extra = {"GLASSBENCH_DATABASE_URL": url, **_terminal_environment()}
    with tempfile.TemporaryDirectory(prefix="glassbench-") as tmp:
        reply = Path(tmp) / "reply.json"
        ended = run_child(
            [python, "-m", __name__],
            stdin=json.dumps({"target": target, "request": request, "reply": str(reply)}),
            env=child_environment(threads=threads, extra=extra),
        )
        if not reply.exists():
            # It never got to answer (not a Python, no glassbench, a crash, killed): its own
            # last words are the only cause there is.
            raise Failure(
                f"interpreter {python} {ended.how()} before it returned a result"
                + ended.last_words()
            )
        answer = json.loads(reply.read_text())
    error = answer.get("error")
    if error is not None:
        cls = _ERRORS.get(error.pop("kind"), Failure)
        raise cls(error.pop("detail"), **error)
    return answer["result"]


# The parent reads the child's stderr through a pipe (to quote its last lines when it fails);
# this tells the child that the pipe ends on a terminal, so its progress bar still shows.
_TERMINAL_VARIABLE = "GLASSBENCH_STDERR_IS_TERMINAL"


def _terminal_environment() -> dict[str, str]:
    """What the child needs to draw on this process's terminal: the flag and its width."""
    try:
        if not sys.stderr.isatty():
            return {}
    except (AttributeError, ValueError):
        return {}
    size = shutil.get_terminal_size()
    return {_TERMINAL_VARIABLE: "1", "COLUMNS": str(size.columns), "LINES": str(size.lines)}


class _TerminalStderr(io.TextIOWrapper):
    """The child's stderr when the parent's is a terminal: a pipe that says it is one."""

    def isatty(self) -> bool:
        return True


def _adopt_parent_terminal() -> None:
    if os.environ.pop(_TERMINAL_VARIABLE, None) != "1" or sys.stderr.isatty():
        return
    buffer = getattr(sys.stderr, "buffer", None)
    if buffer is not None:
        # sys.__stderr__ keeps the old wrapper alive, so the shared buffer is never closed.
        sys.stderr = _TerminalStderr(
            buffer,
            encoding=getattr(sys.stderr, "encoding", None) or "utf-8",
            errors="backslashreplace",
            line_buffering=True,
        )


def serve() -> int:
    """The child's side: run the requested function, write its answer; the exit status."""
    import importlib

    from glassbench.service.db import make_engine
    from glassbench.settings import get_settings

    _adopt_parent_terminal()
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("glassbench").setLevel(logging.INFO)
    message = json.loads(sys.stdin.read())
    reply = Path(message["reply"])
    module, _, name = str(message["target"]).partition(":")
    if not module.startswith("glassbench."):
        raise SystemExit(f"refusing to run {message['target']!r}")
    handler: Callable[[Engine, Any], Any] = getattr(importlib.import_module(module), name)
    settings = get_settings()  # the database URL comes from GLASSBENCH_DATABASE_URL
    engine = make_engine(settings.database_url, settings=settings)
    status = 0
    try:
        answer: dict[str, Any] = {"result": handler(engine, message["request"])}
    except GlassbenchError as exc:
        kind = "BadInput" if isinstance(exc, BadInput) else "Failure"
        fields = {"source": exc.source, "field": exc.field, "where": exc.where}
        answer = {"error": {"kind": kind, "detail": exc.detail, **fields}}
        status = exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # reported to the parent as one line, like the command line does
        log.debug("delegated call failed", exc_info=True)
        answer = {
            "error": {"kind": "Failure", "detail": f"{type(exc).__name__}: {first_line(exc)}"}
        }
        status = 1
    finally:
        engine.dispose()
    # Atomic: the parent reads either nothing or the whole answer.
    tmp = reply.with_suffix(".tmp")
    tmp.write_text(json.dumps(answer))
    os.replace(tmp, reply)
    return status


if __name__ == "__main__":  # pragma: no cover - exercised through subprocesses
    sys.exit(serve())
