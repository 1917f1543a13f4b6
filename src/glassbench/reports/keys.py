"""Column keys of every report table, each with its display label and unit.

One enum for all tables (cf. matbench-discovery ``MbdKey``): the string value is the column name
used in DataFrames and CSVs (and, for quantities, the property name of the ``property`` and
``experiment`` tables), while HTML/Markdown headers and figure axes are built from ``label`` and
``unit`` so that a unit is written in exactly one place.
"""

from __future__ import annotations

from enum import StrEnum


class Key(StrEnum):
    """A report column: ``str(key)`` is the column name, ``key.label``/``key.unit`` display it."""

    label: str
    unit: str

    def __new__(cls, value: str, label: str = "", unit: str = "") -> Key:
        obj = str.__new__(cls, value)
        obj._value_ = value
        obj.label = label or value
        obj.unit = unit
        return obj

    @property
    def header(self) -> str:
        """``label (unit)``, or just the label for dimensionless columns."""
        return f"{self.label} ({self.unit})" if self.unit else self.label

    # --- identifiers -------------------------------------------------------------------
    run_id = "run_id", "Run"
    mlip = "mlip", "MLIP"
    x = "x", "x in Na4P2S7-xOx"
    quench_rate = "quench_rate_k_ps", "Quench rate", "K/ps"
    protocol_id = "protocol_id", "Protocol"
    seed = "seed", "Seed"
    series = "series", "Series"
    prop = "property", "Property"
    crystal = "crystal", "Crystal"
    stage = "stage", "Stage"
    step = "step", "Step"
    temperature = "temperature_k", "Temperature", "K"

    # --- glass properties (names shared with the `property`/`experiment` tables) ---------
    density = "density_g_cm3", "Density", "g/cm³"
    young = "young_modulus_gpa", "Young's modulus", "GPa"
    bulk = "bulk_modulus_gpa", "Bulk modulus", "GPa"
    shear = "shear_modulus_gpa", "Shear modulus", "GPa"
    poisson = "poisson_ratio", "Poisson ratio"

    # --- fractions of P units (over all P) and of anions (over all S+O) ------------------
    p0 = "p0", "P0 fraction"
    p1 = "p1", "P1 fraction"
    p1_incl_p1p = "p1_incl_p1p", "P1 (incl. P1P) fraction"
    p2 = "p2", "P2 fraction"
    p1p = "p1p", "P1P fraction"
    p3c = "p3c", "P3c fraction"
    p2es = "p2es", "P2ES fraction"
    ppchain = "ppchain", "P-P chain fraction"
    bs = "bs", "BS fraction"
    nbs = "nbs", "NBS fraction"
    bo = "bo", "BO fraction"
    nbo = "nbo", "NBO fraction"
    ss_fraction = "ss_fraction", "S in S-S chains fraction"
    na_cn = "na_cn", "Na-(S+O) coordination", "neighbours"
    crystal_volume = "volume_per_formula_unit_a3", "Crystal volume per f.u.", "Å³"

    # --- statistics --------------------------------------------------------------------
    n = "n", "Points"
    n_seeds = "n_seeds", "Seeds"
    mae = "mae", "MAE"
    mean_error = "mean_error", "Mean signed error"
    seed_std = "seed_std_mean", "Mean seed std"
    sim_mean = "sim_mean", "Simulated (seed mean)"
    sim_std = "sim_std", "Seed std"
    exp_value = "exp_value", "Experiment"
    exp_uncertainty = "exp_uncertainty", "Experimental uncertainty"
    error = "error", "Error (sim - exp)"
    volume = "volume_per_fu_a3", "Relaxed volume per f.u.", "Å³"
    exp_volume = "exp_volume_per_fu_a3", "Experimental volume per f.u.", "Å³"
    deviation_pct = "deviation_pct", "Volume deviation", "%"


# Quantities that can be compared with glass experiments, in report order.
COMPARABLE: tuple[Key, ...] = (
    Key.density, Key.young, Key.bulk, Key.shear, Key.poisson,
    Key.p0, Key.p1, Key.p1_incl_p1p, Key.p2, Key.p1p, Key.p3c, Key.p2es,
    Key.bs, Key.nbs, Key.bo, Key.nbo, Key.na_cn,
)  # fmt: skip

# Figure panels of the trends section (experiment is overlaid where ingested).
TREND_PANELS: dict[str, tuple[Key, ...]] = {
    "Density and elastic moduli": (Key.density, Key.young, Key.bulk, Key.shear),
    "P speciation (31P NMR units)": (Key.p0, Key.p1_incl_p1p, Key.p2, Key.p1p),
    "Bridging and non-bridging anions": (Key.bs, Key.bo, Key.nbs, Key.nbo),
    "Na coordination": (Key.na_cn,),
}

# Units that MLIPs produce but experiment does not show (edge sharing, P-P bonds, S-S chains).
ARTEFACTS: tuple[Key, ...] = (Key.p3c, Key.p2es, Key.ppchain, Key.ss_fraction)

# Traced during the quench, per frame.
TRACE_UNITS: tuple[Key, ...] = (Key.p0, Key.p1, Key.p2, Key.p1p, Key.p3c, Key.p2es)


def key_of(name: str) -> Key | None:
    """The key for a column name, or None for names outside the vocabulary."""
    try:
        return Key(name)
    except ValueError:
        return None
