"""The registry of potentials: :func:`register_mlip` is what ``glassbench mlip add`` runs.

A registration records the model file's sha256 (checked before every run), the interpreter of
the environment that runs the MLIP (docs/environments.md) and its provenance (training data,
functional, the MLIP it was fine-tuned from).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from glassbench.errors import BadInput
from glassbench.schema.models import DISPERSION

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

ARCH_CHOICES = ("mace", "deepmd", "grace", "chgnet", "sevenn")
# Architectures whose weights ship inside their wheel: ``model`` names a pretrained model
# (default, allowed names or None for any).
PRETRAINED: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "chgnet": ("0.3.0", ("0.3.0", "r2scan")),
    "sevenn": ("7net-0", None),
}
LIST_COLUMNS = ("name", "arch", "model", "sha256", "python", "functional", "dispersion", "parent")


@dataclass(frozen=True)
class Registration:
    """A registered MLIP: ``model`` is the resolved file path or the pretrained model's name."""

    id: int
    name: str
    arch: str
    model: str
    model_sha256: str | None

    def describe(self) -> str:
        """The one line ``glassbench mlip add`` prints."""
        sha = f", sha256 {self.model_sha256[:12]}..." if self.model_sha256 else ""
        return f"registered MLIP {self.name!r} (id {self.id}, {self.arch}, {self.model}{sha})"


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
    """Register MLIP ``name``; re-registering identical values changes nothing.

    ``model`` is the model file (mace, deepmd; a directory for grace) or a pretrained model's
    name (chgnet, sevenn; default ``0.3.0`` / ``7net-0``). ``python`` is the interpreter of
    the environment that runs it (default: this one). A different model under an existing
    name is refused unless ``replace``.
    """
    from glassbench.hashing import sha256_file
    from glassbench.service import unit_of_work
    from glassbench.service.migrations import require_schema
    from glassbench.service.repos import NotFound, add_mlip, get_mlip

    if not name.strip() or len(name) > 128:
        raise BadInput("name must be 1-128 characters", field="name")
    if arch not in ARCH_CHOICES:
        raise BadInput(
            f"unknown architecture {arch!r} (known: {', '.join(ARCH_CHOICES)})", field="arch"
        )
    if dispersion not in DISPERSION:
        raise BadInput(f"must be 'none' or 'd3', not {dispersion!r}", field="dispersion")
    if dispersion == "d3":
        from glassbench.runners.dispersion import d3_parameter_set

        # Refused now, not at the first run: D3 parameters are those of the training functional.
        d3_parameter_set(functional)
    model_sha = None
    if arch in PRETRAINED:
        default, allowed = PRETRAINED[arch]
        model = str(model or default)
        if allowed and model not in allowed:
            raise BadInput(
                f"{arch} pretrained model must be one of {allowed}, not {model!r}", field="model"
            )
    else:
        if model is None:
            raise BadInput(f"architecture {arch} needs a model file", field="model")
        path = Path(model)
        if not path.exists():
            raise BadInput("model file does not exist", source=str(model))
        model = str(path.resolve())
        model_sha = sha256_file(path)
    if python is not None:
        if not Path(python).exists():
            raise BadInput("interpreter does not exist", source=str(python))
        python = str(Path(python).absolute())
    require_schema(engine)
    with unit_of_work(engine) as session:
        parent_id = None
        if parent is not None:
            try:
                parent_id = get_mlip(session, parent).id
            except NotFound as exc:
                raise BadInput(str(exc), field="parent") from None
        values = {
            "name": name,
            "arch": arch,
            "model_path": model,
            "model_sha256": model_sha,
            "python": python,
            "training_data": training_data,
            "functional": functional,
            "dispersion": dispersion,
            "parent_id": parent_id,
        }
        try:
            mid = add_mlip(session, values, replace=replace)
        except ValueError as exc:
            raise BadInput(str(exc), field="name") from None
    return Registration(mid, name, arch, model, model_sha)


def list_mlips(engine: Engine) -> list[tuple[Any, ...]]:
    """Registered MLIPs by name, one tuple of :data:`LIST_COLUMNS` each (sha256 shortened)."""
    from sqlmodel import Session, select

    from glassbench.schema import MLIP
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
