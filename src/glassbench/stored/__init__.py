"""Work on what is already stored: the use cases that compute on a database's frames.

- ``frames``: stored frames back as arrays or ASE Atoms, read in bounded batches;
- ``elastic``: ``glassbench compute elastic`` (moduli of stored structures);
- ``energy``: ``glassbench compute energy`` (cross-evaluation by another MLIP);
- ``analyses``: named cutoff sets and ``glassbench reanalyze``;
- ``export``: ``glassbench export frames`` / ``export run``.

Which runs: :class:`glassbench.service.selection.RunSelector` (docs/stored-data.md).
"""
