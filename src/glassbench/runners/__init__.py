"""Simulation building blocks: structures, MLIP calculators, elastic moduli, crystal volumes.

Nothing here touches the database, and nothing imports torch / TensorFlow at module import:
the heavy packages load inside `glassbench.runners.calculators.make_calculator`.
"""
