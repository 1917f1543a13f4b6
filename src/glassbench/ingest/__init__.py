"""Files into the database: the use cases (``usecases``: ``ingest_lammps``, ``ingest_traj``,
``ingest_experiment``), the readers (``lammps_log``, ``lammps_dump``, ``traj``,
``experiment``) and the streaming writers they share with the live runner (``pipeline``,
``slots``, ``thermo``, ``frames``, ``properties``)."""
