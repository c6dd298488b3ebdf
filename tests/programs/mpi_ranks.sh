#!/bin/sh
# One line per rank of an MPI run (issue 15): started under the resource's MPI
# starter (srun on Slurm), each process appends its rank.
echo "rank ${SLURM_PROCID:-${OMPI_COMM_WORLD_RANK:-none}} of ${SLURM_NTASKS:-none}" >> ranks.txt
