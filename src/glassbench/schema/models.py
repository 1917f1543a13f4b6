"""The normalized results schema.

Natural keys are named unique constraints enforced by the database; enum-like columns carry
named CHECK constraints; units are part of column names. Per-atom arrays live in one compressed
binary column per frame (see :mod:`glassbench.schema.arrays`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

# Must be set before any table is defined so that every constraint gets a stable name,
# which is what lets Alembic compare models and migrations without drift.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ARCHITECTURES = ("mace", "deepmd", "grace", "chgnet", "sevenn", "other")
DISPERSION = ("none", "d3")


class RunStatus(StrEnum):
    """The life of a run row; the single source of the allowed values and of their CHECK.

    ``pending`` (registered, never claimed) -> ``running`` (claimed by a worker, heartbeating)
    -> ``done`` or ``failed`` (a failed run can be claimed again). Only
    :mod:`glassbench.service.runs` changes it.
    """

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


RUN_STATUS = tuple(s.value for s in RunStatus)
RUN_SOURCE = ("runner", "lammps", "extxyz", "traj", "synthetic")
FRAME_STAGES = (
    "initial", "melt", "quench", "anneal", "production", "final", "strain", "other",
)  # fmt: skip

# Property names shared by `property`, `experiment` and the `mlip_mae` view.
RUN_PROPERTIES = (
    "density_g_cm3",
    "bulk_modulus_gpa",
    "young_modulus_gpa",
    "shear_modulus_gpa",
    "poisson_ratio",
)
FRACTION_PROPERTIES = (
    "p0",
    "p1",
    "p2",
    "p1p",
    "p1_incl_p1p",
    "p3c",
    "p2es",
    "bs",
    "nbs",
    "bo",
    "nbo",
)
COORDINATION_PROPERTIES = ("na_cn",)
CRYSTAL_PROPERTIES = ("volume_per_formula_unit_a3",)
EXPERIMENT_PROPERTIES = (
    RUN_PROPERTIES + FRACTION_PROPERTIES + COORDINATION_PROPERTIES + CRYSTAL_PROPERTIES
)

# Speciation vocabulary (counts per frame, long format); see docs/speciation.md.
SPECIATION_UNITS = (
    "P0", "P1", "P2", "P3", "P4", "P1P", "PPend", "P3c", "P_other", "P2ES", "PPchain",
    "BS", "NBS", "BO", "NBO", "free_S", "free_O", "over_S", "over_O",
    "S_in_chains", "n_P", "n_S", "n_O", "n_Na",
)  # fmt: skip

# Unit fractions of a frame: column -> (numerator units, denominator), the denominator being
# the sum over P_CLASSES ("n_p") or over ANION_CLASSES ("n_anion"); NULL when it is 0. The one
# definition behind the views (schema/views.py) and the window averages (ingest/window.py).
P_CLASSES = ("P0", "P1", "P2", "P3", "P4", "P1P", "PPend", "P3c", "P_other")
ANION_CLASSES = ("BS", "NBS", "BO", "NBO", "free_S", "free_O", "over_S", "over_O")
SPECIATION_FRACTIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "p0": (("P0",), "n_p"),
    "p1": (("P1",), "n_p"),
    "p2": (("P2",), "n_p"),
    "p3": (("P3",), "n_p"),
    "p4": (("P4",), "n_p"),
    "p1p": (("P1P",), "n_p"),
    "ppend": (("PPend",), "n_p"),
    "p1_incl_p1p": (("P1", "P1P"), "n_p"),
    "p3c": (("P3c",), "n_p"),
    "p_other": (("P_other",), "n_p"),
    "p2es": (("P2ES",), "n_p"),
    "ppchain": (("PPchain",), "n_p"),
    "bs": (("BS",), "n_anion"),
    "nbs": (("NBS",), "n_anion"),
    "bo": (("BO",), "n_anion"),
    "nbo": (("NBO",), "n_anion"),
    "free_s": (("free_S",), "n_anion"),
    "free_o": (("free_O",), "n_anion"),
    "over_s": (("over_S",), "n_anion"),
    "over_o": (("over_O",), "n_anion"),
}
# View column -> `coordination` column, for the per-frame coordination and S-S quantities.
COORDINATION_COLUMNS: dict[str, str] = {
    "na_cn": "na_cn_mean",
    "na_cn_s": "na_cn_s_mean",
    "na_cn_o": "na_cn_o_mean",
    "ss_fraction": "ss_fraction",
    "ss_mean_length": "ss_mean_length",
    "na_s_share": "na_s_share",
    "na_s_peak": "na_s_peak_a",
    "na_o_peak": "na_o_peak_a",
    "ss_long_share": "ss_long_share",
}
# Units added after frames were first stored (revision 0004): a frame analysed before has no
# row for them, so a fraction over them is unknown there (NULL in the views and windows), not
# 0: its chain ends were counted in P1P then.
LATER_UNITS = ("PPend",)
# Per-frame quantities averaged over a run's production window (`window_stat`).
WINDOW_QUANTITIES = (*SPECIATION_FRACTIONS, *COORDINATION_COLUMNS)


# The analysis every ingest and run writes (the cutoffs given then, the built-in ones unless
# --cutoff was given); migration 0003 creates it with this id, and the columns that name an
# analysis default to it, so writers of the default analysis never name it.
DEFAULT_ANALYSIS = "default"
DEFAULT_ANALYSIS_ID = 1


def _analysis_id_field(description: str) -> Any:
    return Field(
        default=DEFAULT_ANALYSIS_ID,
        foreign_key="analysis.id",
        primary_key=True,
        sa_column_kwargs={"server_default": sa.text(str(DEFAULT_ANALYSIS_ID)), "default": None},
        description=description,
    )


def _in(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({quoted})"


def utcnow() -> datetime:
    return datetime.now(UTC)


class MLIPBase(SQLModel):
    name: str = Field(
        max_length=128, description="Unique registry name, e.g. 'MP0' or 'chgnet-pbe'."
    )
    arch: str = Field(max_length=16, description="Architecture: " + ", ".join(ARCHITECTURES))
    model_path: str | None = Field(
        default=None, max_length=1024, description="Model file or pretrained name."
    )
    model_sha256: str | None = Field(
        default=None, max_length=64, description="sha256 of the model file."
    )
    python: str | None = Field(
        default=None, max_length=1024, description="Interpreter that runs this MLIP."
    )
    training_data: str | None = Field(default=None, max_length=512)
    functional: str | None = Field(
        default=None, max_length=64, description="DFT functional of the training data."
    )
    dispersion: str = Field(
        default="none", max_length=8, description="Dispersion correction: none or d3."
    )
    parent_id: int | None = Field(
        default=None, foreign_key="mlip.id", description="Fine-tuned from."
    )
    package_versions_json: str | None = Field(default=None, description="JSON of package versions.")


class MLIP(MLIPBase, table=True):
    __tablename__ = "mlip"
    __table_args__ = (
        sa.UniqueConstraint("name"),
        sa.CheckConstraint(_in("arch", ARCHITECTURES), name="arch"),
        sa.CheckConstraint(_in("dispersion", DISPERSION), name="dispersion"),
    )
    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(default_factory=utcnow)


class Composition(SQLModel, table=True):
    __tablename__ = "composition"
    __table_args__ = (sa.UniqueConstraint("family", "x"),)
    id: int | None = Field(default=None, primary_key=True)
    family: str = Field(max_length=64, description="Composition family, e.g. 'Na4P2S7-xOx'.")
    x: float = Field(description="Composition parameter x (O per formula unit).")
    formula: str = Field(max_length=64, description="Formula per formula unit, e.g. 'Na4P2S6O1'.")


class Protocol(SQLModel, table=True):
    """MD parameters outside the run key, identified by a content hash of all of them (the
    human ``name`` is a label beside them, not part of the hash)."""

    __tablename__ = "protocol"
    __table_args__ = (sa.UniqueConstraint("content_hash"),)
    id: int | None = Field(default=None, primary_key=True)
    content_hash: str = Field(max_length=64, description="sha256 of the sorted-key JSON of params.")
    kind: str = Field(default="meltquench", max_length=32, description="meltquench or external.")
    formula_units: int | None = Field(default=None)
    t_melt_k: float | None = Field(default=None, description="Melt temperature in K.")
    melt_ps: float | None = Field(default=None, description="Melt duration in ps.")
    t_final_k: float | None = Field(default=None, description="Final temperature in K.")
    anneal_ps: float | None = Field(default=None, description="Anneal duration in ps.")
    timestep_fs: float | None = Field(default=None, description="MD timestep in fs.")
    params_json: str = Field(description="All parameters as sorted-key JSON.")
    # Last, where migration 0002 added it: a database built from the models and a migrated
    # one then list the same columns in the same order.
    name: str | None = Field(
        default=None,
        max_length=64,
        description="Human name ('study', 'default', a protocol file's stem); not hashed.",
    )


class Run(SQLModel, table=True):
    """One simulation, keyed by (MLIP, composition, quench rate, seed, protocol)."""

    __tablename__ = "run"
    __table_args__ = (
        sa.UniqueConstraint("mlip_id", "composition_id", "quench_rate_k_ps", "seed", "protocol_id"),
        sa.CheckConstraint(_in("status", RUN_STATUS), name="status"),
        sa.CheckConstraint(_in("source", RUN_SOURCE), name="source"),
        sa.CheckConstraint("quench_rate_k_ps > 0", name="quench_rate_positive"),
    )
    id: int | None = Field(default=None, primary_key=True)
    mlip_id: int = Field(foreign_key="mlip.id", index=True)
    composition_id: int = Field(foreign_key="composition.id", index=True)
    quench_rate_k_ps: float = Field(description="Quench rate in K/ps.")
    seed: int
    protocol_id: int = Field(foreign_key="protocol.id")
    status: str = Field(default=RunStatus.PENDING.value, max_length=16)
    source: str = Field(default="runner", max_length=16)
    content_hash: str | None = Field(
        default=None, max_length=64, description="sha256 of ingested files."
    )
    n_atoms: int | None = Field(default=None)
    error: str | None = Field(default=None, description="Last error message of a failed run.")
    attempts: int = Field(default=0, description="How many times the run was claimed.")
    claimed_by: str | None = Field(
        default=None, max_length=256, description="host:pid of the worker."
    )
    heartbeat_at: datetime | None = Field(default=None)
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = Field(default=None)
    finished_at: datetime | None = Field(default=None)
    wall_s: float | None = Field(default=None, description="Wall time in s.")
    host: str | None = Field(default=None, max_length=256)
    software_json: str | None = Field(default=None, description="Package versions used, JSON.")


class Frame(SQLModel, table=True):
    """A stored structure: per-atom arrays are compressed binary columns, not rows."""

    __tablename__ = "frame"
    __table_args__ = (
        sa.UniqueConstraint("run_id", "step"),
        sa.CheckConstraint(_in("stage", FRAME_STAGES), name="stage"),
    )
    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="run.id", index=True)
    stage: str = Field(max_length=16)
    step: int
    time_ps: float | None = Field(default=None, description="Simulation time in ps.")
    temperature_k: float | None = Field(
        default=None, description="Nominal (target) temperature in K."
    )
    n_atoms: int
    cell_json: str = Field(description="3x3 cell in Å as JSON.")
    pbc: str = Field(default="TTT", max_length=3, description="Periodicity along a,b,c as T/F.")
    numbers: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))
    positions: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))
    # Last, where migration 0003 added them. What the MLIP that made the frame computed for
    # it, where known (the runner; an ingested file with forces): the reference of `frame_eval`.
    forces: bytes | None = Field(
        default=None,
        sa_column=sa.Column(sa.LargeBinary, nullable=True),
        description="Forces in eV/Å (packed array) of the run's MLIP, where known.",
    )
    energy_ev: float | None = Field(
        default=None, description="Potential energy in eV of the run's MLIP, where known."
    )


class Thermo(SQLModel, table=True):
    __tablename__ = "thermo"
    run_id: int = Field(foreign_key="run.id", primary_key=True)
    step: int = Field(primary_key=True)
    time_ps: float | None = Field(default=None)
    temperature_k: float | None = Field(default=None)
    pressure_gpa: float | None = Field(default=None)
    potential_energy_ev: float | None = Field(default=None)
    kinetic_energy_ev: float | None = Field(default=None)
    total_energy_ev: float | None = Field(default=None)
    volume_a3: float | None = Field(default=None)
    density_g_cm3: float | None = Field(default=None)


class Analysis(SQLModel, table=True):
    """A named set of bond cutoffs under which stored frames are analysed.

    ``default`` (id 1) is the analysis made when the frames were stored, with the cutoffs
    given then (each frame's ``coordination.cutoffs_json`` says which); ``glassbench analysis
    add`` names others, which ``glassbench reanalyze`` computes beside it.
    """

    __tablename__ = "analysis"
    __table_args__ = (sa.UniqueConstraint("name"),)
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64, description="Unique name, e.g. 'default' or 'na-s-3.4'.")
    cutoffs_json: str = Field(description="Pair cutoffs in Å, JSON.")
    description: str | None = Field(default=None, max_length=512)
    created_at: datetime = Field(default_factory=utcnow)


class Speciation(SQLModel, table=True):
    """Integer counts of structural units per frame and analysis (long format)."""

    __tablename__ = "speciation"
    __table_args__ = (sa.CheckConstraint(_in("unit", SPECIATION_UNITS), name="unit"),)
    frame_id: int = Field(foreign_key="frame.id", primary_key=True)
    unit: str = Field(primary_key=True, max_length=16)
    count: int
    analysis_id: int = _analysis_id_field("The analysis (cutoff set) of these counts.")


class Coordination(SQLModel, table=True):
    """Per-frame coordination and chain statistics, with the cutoffs used."""

    __tablename__ = "coordination"
    frame_id: int = Field(foreign_key="frame.id", primary_key=True)
    na_n: int = Field(description="Number of Na atoms.")
    na_cn_mean: float | None = Field(default=None, description="Mean Na-(S+O) coordination.")
    na_cn_s_mean: float | None = Field(default=None)
    na_cn_o_mean: float | None = Field(default=None)
    na_cn_histogram_json: str = Field(default="{}")
    ss_fraction: float | None = Field(default=None, description="Fraction of S in S-S chains.")
    ss_mean_length: float | None = Field(
        default=None, description="Mean S-S chain length in atoms."
    )
    ss_chains_json: str = Field(default="{}")
    cutoffs_json: str = Field(description="Pair cutoffs in Å used for this analysis.")
    analysis_id: int = _analysis_id_field("The analysis (cutoff set) of this row.")
    # Last, where migration 0004 added them; NULL in rows analysed before it.
    na_s_share: float | None = Field(
        default=None, description="Na-S contacts / (Na-S + Na-O contacts); NULL without any."
    )
    na_s_peak_a: float | None = Field(
        default=None, description="First peak of the partial g(r) Na-S in Å."
    )
    na_o_peak_a: float | None = Field(
        default=None, description="First peak of the partial g(r) Na-O in Å."
    )
    ss_long_share: float | None = Field(
        default=None, description="S-S chains of more than two S / all chains; NULL without any."
    )


class Property(SQLModel, table=True):
    __tablename__ = "property"
    __table_args__ = (
        sa.UniqueConstraint("run_id", "name"),
        sa.CheckConstraint(_in("name", RUN_PROPERTIES), name="name"),
    )
    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="run.id", index=True)
    name: str = Field(max_length=32)
    value: float
    stderr: float | None = Field(default=None)
    # Unbounded since revision 0003: an elastic method states strains, relaxations, pressure
    # and the MLIP, past the 256 characters PostgreSQL enforced before.
    method: str | None = Field(default=None)
    details_json: str | None = Field(default=None)


class WindowStat(SQLModel, table=True):
    """A per-frame quantity averaged over a run's production window.

    ``mean`` is over the ``n_frames`` window frames where the quantity is defined;
    ``stderr`` is the standard error from ``n_blocks`` consecutive blocks of ``block_frames``
    frames (NULL with fewer than two blocks). Written by
    :func:`glassbench.ingest.window.store_window_stats`.
    """

    __tablename__ = "window_stat"
    __table_args__ = (
        sa.UniqueConstraint("run_id", "analysis_id", "quantity"),
        sa.CheckConstraint(_in("quantity", WINDOW_QUANTITIES), name="quantity"),
    )
    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="run.id", index=True)
    quantity: str = Field(max_length=32, description="A view column: p0, ..., na_cn, ...")
    mean: float
    stderr: float | None = Field(default=None, description="Block-average standard error.")
    n_frames: int = Field(description="Window frames in which the quantity is defined.")
    n_blocks: int = Field(description="Full blocks behind the stderr.")
    block_frames: int = Field(description="Frames per block.")
    step_from: int = Field(description="Step of the first frame averaged.")
    step_to: int = Field(description="Step of the last frame averaged.")
    analysis_id: int = Field(
        default=DEFAULT_ANALYSIS_ID,
        foreign_key="analysis.id",
        sa_column_kwargs={"server_default": sa.text(str(DEFAULT_ANALYSIS_ID)), "default": None},
        description="The analysis whose per-frame values were averaged.",
    )


class FrameEval(SQLModel, table=True):
    """A stored frame evaluated by an MLIP (``glassbench compute energy``): its energy, forces
    and stress, and how far they are from those of the MLIP that made the frame.

    The reference is the making MLIP's forces and energy: the frame's own (``frame.forces``,
    ``frame.energy_ev``), else that MLIP's own evaluation of the frame (a ``frame_eval`` row),
    else, for the energy only, the thermo row of the frame's step. ``ref_source`` says which;
    the disagreement columns are NULL where no reference is known.
    """

    __tablename__ = "frame_eval"
    __table_args__ = (sa.UniqueConstraint("frame_id", "mlip_id"),)
    id: int | None = Field(default=None, primary_key=True)
    frame_id: int = Field(foreign_key="frame.id", index=True)
    mlip_id: int = Field(foreign_key="mlip.id", index=True, description="The evaluating MLIP.")
    n_atoms: int
    energy_ev: float = Field(description="Potential energy in eV.")
    energy_per_atom_ev: float
    forces: bytes = Field(
        sa_column=sa.Column(sa.LargeBinary, nullable=False), description="eV/Å, packed array."
    )
    stress_gpa_json: str | None = Field(
        default=None, description="Voigt stress in GPa (xx, yy, zz, yz, xz, xy), JSON."
    )
    dispersion: str = Field(default="none", max_length=8)
    ref_energy_per_atom_ev: float | None = Field(default=None)
    energy_diff_per_atom_ev: float | None = Field(
        default=None, description="This MLIP's energy per atom minus the reference's."
    )
    force_rmse_ev_a: float | None = Field(
        default=None, description="RMS over atoms and components of the force difference."
    )
    force_max_ev_a: float | None = Field(
        default=None, description="Largest per-atom force difference (norm)."
    )
    ref_source: str | None = Field(
        default=None, max_length=16, description="frame, mlip or thermo (energy only)."
    )
    method: str | None = Field(default=None)
    created_at: datetime = Field(default_factory=utcnow)


class Experiment(SQLModel, table=True):
    """Reference values from the literature, per (composition or crystal, property, source).

    ``subject`` is the natural key part that says what was measured: ``x=1`` within a family,
    or ``crystal:<name>``; it is derived by the ingest code from the other columns.
    """

    __tablename__ = "experiment"
    __table_args__ = (
        sa.UniqueConstraint("subject", "property", "source"),
        sa.CheckConstraint(_in("property", EXPERIMENT_PROPERTIES), name="property"),
        sa.CheckConstraint(
            "(composition_id IS NULL AND crystal IS NOT NULL) OR "
            "(composition_id IS NOT NULL AND crystal IS NULL)",
            name="composition_or_crystal",
        ),
    )
    id: int | None = Field(default=None, primary_key=True)
    subject: str = Field(max_length=128)
    composition_id: int | None = Field(default=None, foreign_key="composition.id", index=True)
    crystal: str | None = Field(default=None, max_length=64)
    property: str = Field(max_length=32)
    value: float
    uncertainty: float | None = Field(default=None)
    source: str = Field(max_length=512, description="Citation of the measurement.")


class CrystalVolume(SQLModel, table=True):
    __tablename__ = "crystal_volume"
    __table_args__ = (sa.UniqueConstraint("mlip_id", "crystal"),)
    id: int | None = Field(default=None, primary_key=True)
    mlip_id: int = Field(foreign_key="mlip.id", index=True)
    crystal: str = Field(max_length=64)
    volume_per_fu_a3: float = Field(description="Relaxed volume per formula unit in Å^3.")
    exp_volume_per_fu_a3: float | None = Field(default=None, description="Experimental, Å^3.")
    deviation_pct: float | None = Field(default=None, description="(relaxed - exp) / exp in %.")
    structure_sha256: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)


class Report(SQLModel, table=True):
    __tablename__ = "report"
    __table_args__ = (sa.UniqueConstraint("kind", "fingerprint", "out_dir"),)
    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=32)
    params_json: str = Field(default="{}")
    fingerprint: str = Field(max_length=64, description="sha256 of the data the report used.")
    out_dir: str = Field(max_length=1024)
    formats: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)


TABLES = (
    MLIP, Composition, Protocol, Run, Frame, Thermo, Analysis, Speciation, Coordination,
    Property, WindowStat, FrameEval, Experiment, CrystalVolume, Report,
)  # fmt: skip
