"""Readers that turn files into rows: experiment CSV, LAMMPS logs/dumps, ASE trajectories."""
