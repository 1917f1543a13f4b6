"""Structural analysis of Na-P-S-O glasses: pure functions, numpy arrays in, dataclasses out.

Nothing here touches the database; ASE is only used through objects the caller passes in.
"""

from glassbench.analysis.cutoffs import DEFAULT_CUTOFFS, canonical_pair, parse_cutoffs
from glassbench.analysis.speciation import (
    AnionUnits,
    FrameAnalysis,
    NaCoordination,
    PUnits,
    SSChains,
    UnitSites,
    analyze_atoms,
    analyze_frame,
    locate_units,
)

__all__ = [
    "DEFAULT_CUTOFFS",
    "AnionUnits",
    "FrameAnalysis",
    "NaCoordination",
    "PUnits",
    "SSChains",
    "UnitSites",
    "analyze_atoms",
    "analyze_frame",
    "canonical_pair",
    "locate_units",
    "parse_cutoffs",
]
