"""The registry of potentials: :func:`register_mlip` is what ``glassbench mlip add`` runs.

A registration records the model file's sha256 (checked before every run), the interpreter of
the environment that runs the MLIP (docs/environments.md) and its provenance (training data,
functional, the MLIP it was fine-tuned from).

Results stay traceable to the model that made them: once an MLIP has results (runs, crystal
volumes, frame evaluations), what computes them (:data:`MODEL_FIELDS`: architecture, model,
dispersion, and the functional when it picks the D3 parameters) cannot change under its name,
not even with ``replace``; a new model gets a new name. Descriptive fields (training data,
functional without D3, parent) and the interpreter may change with ``replace``: a moved model
file is accepted when its sha256 is the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from glassbench.errors import BadInput
from glassbench.inputs import control_character
from glassbench.schema.models import DISPERSION, MLIP

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlmodel import Session

ARCH_CHOICES = ("mace", "deepmd", "grace", "chgnet", "sevenn")
# Architectures whose weights ship inside their wheel: ``model`` names a pretrained model
# (default, allowed names or None for any).
PRETRAINED: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "chgnet": ("0.3.0", ("0.3.0", "r2scan")),
    "sevenn": ("7net-0", None),
}
# What ``model`` is for the others: the file MACE and DeePMD load, the TensorFlow saved-model
# directory GRACE loads (runners/calculators.py). A DeePMD JAX model is a ``.savedmodel``
# directory.
MODEL_KIND: dict[str, str] = {"mace": "file", "deepmd": "file", "grace": "directory"}
LIST_COLUMNS = ("name", "arch", "model", "sha256", "python", "functional", "dispersion", "parent")
# The fields that decide what a model computes: refused to change once the MLIP has results.
MODEL_FIELDS = ("arch", "model_path", "model_sha256", "dispersion")
# The tables whose rows are results of an MLIP, and how a message counts them.
RESULT_TABLES = (("run", "run", "runs"), ("crystal_volume", "crystal volume", "crystal volumes"),
                 ("frame_eval", "frame evaluation", "frame evaluations"))  # fmt: skip


def _length(column: str) -> int:
    return int(MLIP.__table__.c[column].type.length)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Registration:
    """A registered MLIP: ``model`` is the resolved file path or the pretrained model's name.

    ``action`` is ``registered`` (new), ``unchanged`` (registered as it was) or ``updated``
    (``replace`` changed the fields in ``changed``).
    """

    id: int
    name: str
    arch: str
    model: str
    model_sha256: str | None
    action: str = "registered"
    changed: tuple[str, ...] = ()

    def describe(self) -> str:
        """The one line ``glassbench mlip add`` prints."""
        sha = f", sha256 {self.model_sha256[:12]}..." if self.model_sha256 else ""
        what = f"(id {self.id}, {self.arch}, {self.model}{sha})"
        if self.action == "unchanged":
            return f"MLIP {self.name!r} unchanged {what}"
        if self.action == "updated":
            return f"updated MLIP {self.name!r} {what}: changed {', '.join(self.changed)}"
        return f"registered MLIP {self.name!r} {what}"


def check_name(name: str) -> None:
    """Refuse a name that would not print on one line or would not be stored as typed."""
    limit = _length("name")
    if not name.strip():
        raise BadInput("MLIP name is empty", field="name")
    if len(name) > limit:
        raise BadInput(f"MLIP name is {len(name)} characters long, at most {limit}", field="name")
    bad = control_character(name)
    if bad is not None:
        raise BadInput(
            f"MLIP name {name!r} contains the control character {bad[1]} at character {bad[0]}",
            field="name",
        )
    if name != name.strip():
        raise BadInput(f"MLIP name {name!r} has leading or trailing spaces", field="name")


def _check_text(value: str | None, field: str, what: str, *, column: str | None = None) -> None:
    """One-line text that fits its column (``column``, default ``field``)."""
    if value is None:
        return
    limit = _length(column or field)
    if len(value) > limit:
        raise BadInput(f"{what} is {len(value)} characters long, at most {limit}", field=field)
    bad = control_character(value)
    if bad is not None:
        raise BadInput(
            f"{what} {value!r} contains the control character {bad[1]} at character {bad[0]}",
            field=field,
        )


def _check_model(arch: str, model: str | Path | None) -> tuple[str, str | None]:
    """The stored model (resolved path or pretrained name) and its sha256."""
    from glassbench.hashing import sha256_file

    if arch in PRETRAINED:
        default, allowed = PRETRAINED[arch]
        name = str(model or default)
        if allowed and name not in allowed:
            raise BadInput(
                f"{arch} pretrained model must be one of {allowed}, not {name!r}", field="model"
            )
        _check_text(name, "model", "pretrained model name", column="model_path")
        return name, None
    kind = MODEL_KIND[arch]
    if model is None:
        raise BadInput(f"architecture {arch} needs a model {kind}", field="model")
    path = Path(model)
    if not path.exists():
        raise BadInput(f"model {kind} {str(model)!r} does not exist", field="model")
    if kind == "file":
        if path.is_dir() and not (arch == "deepmd" and path.suffix == ".savedmodel"):
            raise BadInput(
                f"{str(model)!r} is a directory; a {arch} model is one file", field="model"
            )
        if not path.is_dir() and not path.is_file():
            # A FIFO or a device (/dev/zero) would be hashed forever.
            raise BadInput(f"{str(model)!r} is not a regular file", field="model")
        if path.is_file() and path.stat().st_size == 0:
            raise BadInput(f"model file {str(model)!r} is empty", field="model")
    elif not path.is_dir():
        raise BadInput(
            f"{str(model)!r} is a file; a {arch} model is a saved-model directory", field="model"
        )
    elif not any(f.is_file() for f in path.rglob("*")):
        raise BadInput(f"model directory {str(model)!r} holds no files", field="model")
    resolved = str(path.resolve())
    if len(resolved) > _length("model_path"):
        raise BadInput(
            f"model path is {len(resolved)} characters long, at most {_length('model_path')}",
            field="model",
        )
    try:
        return resolved, sha256_file(path)
    except OSError as exc:
        raise BadInput(
            f"cannot read model {str(model)!r}: {exc.strerror or exc}", field="model"
        ) from None


def _check_python(python: str | Path | None) -> str | None:
    from glassbench.runners.interpreter import interpreter_problem

    if python is None:
        return None
    absolute = str(Path(python).absolute())
    if len(absolute) > _length("python"):
        raise BadInput(
            f"interpreter path is {len(absolute)} characters long, at most {_length('python')}",
            field="python",
        )
    problem = interpreter_problem(python)
    if problem is not None:
        raise BadInput(f"interpreter {str(python)!r} {problem}", field="python")
    return absolute


def check_registration(
    name: str,
    arch: str,
    *,
    model: str | Path | None = None,
    python: str | Path | None = None,
    training_data: str | None = None,
    functional: str | None = None,
    dispersion: str = "none",
) -> tuple[str, str | None, str | None]:
    """Every check of `register_mlip` that needs no database, in the order of its arguments:
    the stored model (path or name), its sha256 and the interpreter's absolute path."""
    check_name(name)
    if arch not in ARCH_CHOICES:
        raise BadInput(
            f"unknown architecture {arch!r} (known: {', '.join(ARCH_CHOICES)})", field="arch"
        )
    _check_text(training_data, "training_data", "training data")
    _check_text(functional, "functional", "functional")
    if dispersion not in DISPERSION:
        raise BadInput(f"must be 'none' or 'd3', not {dispersion!r}", field="dispersion")
    if dispersion == "d3":
        from glassbench.runners.dispersion import d3_parameter_set

        # Refused now, not at the first run: D3 parameters are those of the training functional.
        d3_parameter_set(functional)
    stored_model, sha = _check_model(arch, model)
    return stored_model, sha, _check_python(python)


def register_mlip(
    engine: Engine,
    name: str,
    arch: str,
    *,
    model: str | Path | None = None,
    python: str | Path | None = None,
    training_data: str | None = None,
    functional: str | None = None,
    dispersion: str = "none",
    parent: str | None = None,
    replace: bool = False,
) -> Registration:
    """Register MLIP ``name``; re-registering identical values changes nothing ("unchanged").

    ``model`` is the model file (mace, deepmd; a directory for grace) or a pretrained model's
    name (chgnet, sevenn; default ``0.3.0`` / ``7net-0``). ``python`` is the interpreter of
    the environment that runs it (default: this one); it must import glassbench. Other values
    under an existing name are refused unless ``replace``; with it, the model (the
    :data:`MODEL_FIELDS`) of an MLIP that has results is still refused.
    """
    from sqlmodel import select

    from glassbench.service import unit_of_work
    from glassbench.service.migrations import require_schema
    from glassbench.service.repos import NotFound, add_mlip, get_mlip

    stored_model, model_sha, python_path = check_registration(
        name,
        arch,
        model=model,
        python=python,
        training_data=training_data,
        functional=functional,
        dispersion=dispersion,
    )
    require_schema(engine)
    with unit_of_work(engine) as session:
        parent_id = None
        if parent is not None:
            try:
                parent_id = get_mlip(session, parent).id
            except NotFound as exc:
                raise BadInput(str(exc), field="parent") from None
        values: dict[str, Any] = {
            "name": name,
            "arch": arch,
            "model_path": stored_model,
            "model_sha256": model_sha,
            "python": python_path,
            "training_data": training_data,
            "functional": functional,
            "dispersion": dispersion,
            "parent_id": parent_id,
        }
        # Locked: a run registered meanwhile (its foreign key takes a share lock on this row)
        # waits until the check below has committed or refused.
        existing = session.exec(select(MLIP).where(MLIP.name == name).with_for_update()).first()
        action = "registered"
        changed: tuple[str, ...] = ()
        if existing is not None:
            changed = tuple(k for k, v in values.items() if getattr(existing, k) != v)
            if not changed:
                assert existing.id is not None
                return Registration(existing.id, name, arch, stored_model, model_sha, "unchanged")
            _refuse_model_change(session, existing, values, changed)
            action = "updated"
        try:
            mid = add_mlip(session, values, replace=replace)
        except ValueError as exc:
            raise BadInput(str(exc), field="name") from None
    return Registration(mid, name, arch, stored_model, model_sha, action, changed)


def _changes_model(existing: MLIP, values: dict[str, Any], changed: tuple[str, ...]) -> list[str]:
    """The changed fields that change what the MLIP computes."""
    out = [k for k in changed if k in MODEL_FIELDS]
    if (
        "model_path" in out
        and existing.model_sha256
        and existing.model_sha256 == values["model_sha256"]
    ):
        out.remove("model_path")  # the same file, moved
    if "functional" in changed and "d3" in (existing.dispersion, values["dispersion"]):
        out.append("functional")  # it picks the D3 parameters
    return out


def _refuse_model_change(
    session: Session, existing: MLIP, values: dict[str, Any], changed: tuple[str, ...]
) -> None:
    import sqlalchemy as sa

    fields = _changes_model(existing, values, changed)
    if not fields:
        return
    counts = []
    for table, one, many in RESULT_TABLES:
        n = session.execute(
            sa.text(f"SELECT COUNT(*) FROM {table} WHERE mlip_id = :id"), {"id": existing.id}
        ).scalar_one()
        if n:
            counts.append(f"{n} {one if n == 1 else many}")
    if not counts:
        return
    what = ", ".join(f"{k} {_short(getattr(existing, k))} -> {_short(values[k])}" for k in fields)
    raise BadInput(
        f"MLIP {existing.name!r} has {', '.join(counts)}: its model cannot change ({what}); "
        "register the new model under a new name",
        field="name",
    )


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:18] + "..." + text[-18:]


def list_mlips(engine: Engine) -> list[tuple[Any, ...]]:
    """Registered MLIPs by name, one tuple of :data:`LIST_COLUMNS` each (sha256 shortened)."""
    from sqlmodel import Session, select

    from glassbench.service.migrations import require_schema

    require_schema(engine)
    with Session(engine) as session:
        rows = session.exec(select(MLIP).order_by(MLIP.name)).all()
        names = {m.id: m.name for m in rows}
        return [
            (
                m.name,
                m.arch,
                m.model_path,
                (m.model_sha256 or "")[:12],
                m.python or "",
                m.functional or "",
                m.dispersion,
                names.get(m.parent_id, "") if m.parent_id else "",
            )
            for m in rows
        ]
