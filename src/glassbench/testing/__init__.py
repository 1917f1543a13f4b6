"""Stand-ins for tests, benchmarks and examples: tiny MLIPs and synthetic structures.

Nothing here is physics, and production code never imports this package (see
docs/architecture.md). It ships in the wheel because users testing their own code against
glassbench want the same stand-ins the project's suite uses:

- `glassbench.testing.tiny_models`: offline builders of untrained or barely trained models,
  ``build_tiny_mace(path)``, ``train_tiny_deepmd(workdir)`` (in the DeePMD environment),
  ``build_tiny_grace(dir)`` (in the GRACE environment), and ``find_deepmd_python()`` /
  ``find_grace_python()``, which locate those environments' interpreters.
- `glassbench.testing.synthetic`: ``dimer_glass(x, formula_units)``, a Na4P2S(7-x)O(x) frame
  of intact P2X7 dimers and Na (every P is P1, one bridging anion per dimer), for analysis
  tests that need known speciation. For a random *atomic* starting cell, the one the
  melt-quench runner uses, call `glassbench.runners.structure.random_glass`.

Importing the package or its modules loads no ML framework; the builders import torch, MACE,
DeePMD or GRACE only when called (the latter two in their own interpreter, as a subprocess).
"""
