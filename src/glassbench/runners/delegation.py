"""Run a use case in an MLIP's own interpreter and get its result (or its error) back.

An MLIP registered with ``--python`` runs in that environment (docs/environments.md). The
parent starts ``python -m glassbench.runners.delegation`` there with
:func:`glassbench.runners.interpreter.run_in_interpreter`: the request (which function, with
what) as JSON on stdin, the database URL in the environment (``GLASSBENCH_DATABASE_URL``),
never in argv, which ``ps`` shows to every user of the machine. The child (:func:`serve`)
writes the function's JSON result, or its ``BadInput``/``Failure``, to a file the parent
named, so its stdout and stderr stay the user's: its progress bar and warnings show as if the
run were local.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from glassbench.errors import BadInput, Failure, GlassbenchError, first_line
from glassbench.runners.interpreter import run_in_interpreter

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
    if not Path(python).exists():
        raise Failure(f"interpreter {python} registered for MLIP {mlip.name!r} does not exist")
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
    with tempfile.TemporaryDirectory(prefix="glassbench-") as tmp:
        reply = Path(tmp) / "reply.json"
        proc = run_in_interpreter(
            python,
            [__name__],
            stdin=json.dumps({"target": target, "request": request, "reply": str(reply)}),
            threads=threads,
            env={"GLASSBENCH_DATABASE_URL": url},
        )
        if not reply.exists():
            raise Failure(f"{python} exited with status {proc.returncode} and no result")
        answer = json.loads(reply.read_text())
    error = answer.get("error")
    if error is not None:
        cls = _ERRORS.get(error.pop("kind"), Failure)
        raise cls(error.pop("detail"), **error)
    return answer["result"]


def serve() -> int:
    """The child's side: run the requested function, write its answer; the exit status."""
    import importlib

    from glassbench.service.db import make_engine
    from glassbench.settings import get_settings

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
