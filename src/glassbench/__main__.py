"""``python -m glassbench``: the same CLI (used to run an MLIP in its own interpreter)."""

from glassbench.cli import main

main()
