# Na4P2S7 (x = 0), 4 formula units = 52 atoms (types 1..4 = Na P S O), LAMMPS `units metal`.
# A classical stand-in potential: the ingest tests only need real LAMMPS output with the right
# atom counts, not physical glass structure.
units           metal
atom_style      atomic
boundary        p p p
region          box block 0 9.5 0 9.5 0 9.5
create_box      4 box
create_atoms    1 random 16 101 NULL
create_atoms    2 random 8 102 NULL
create_atoms    3 random 28 103 NULL
mass            1 22.98976928
mass            2 30.973762
mass            3 32.06
mass            4 15.999

# push overlapping random atoms apart; the minimizer's thermo block uses the default style
pair_style      soft 2.5
pair_coeff      * * 5.0
neigh_modify    delay 5
minimize        1e-4 1e-6 200 2000

pair_style      lj/cut 6.0
pair_coeff      * * 0.01 2.6
pair_modify     shift yes
velocity        all create 600 4242 dist gaussian
timestep        0.002
fix             md all nvt temp 600 600 0.1
thermo_style    custom step time temp press pe ke etotal vol density
thermo          20
dump            d all custom 50 dump.metal.lammpstrj id type x y z
run             200

# second run: NPT, other columns, per-atom energies (norm yes), no Time/Volume/Density columns
unfix           md
fix             md all npt temp 600 300 0.1 iso 0 0 1.0
thermo_style    custom step temp pe ke etotal press lx ly lz
thermo_modify   norm yes
run             200
