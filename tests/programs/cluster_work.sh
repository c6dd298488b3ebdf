#!/bin/sh
# A program without the client library (issue 15): it reads inputs/, reports
# what it was given and writes results/ and work.log for the output patterns.
mkdir -p results
{
  echo "cpus=${SLURM_CPUS_ON_NODE:-none} nproc=$(nproc) cores=${SCHEDULER_CORES:-none}"
  echo "ntasks=${SLURM_NTASKS:-none} mem=${SLURM_MEM_PER_NODE:-none} memory=${SCHEDULER_MEMORY_MB:-none}"
  echo "greeting=${GREETING:-none}"
  for f in inputs/*; do
    if [ -f "$f" ]; then echo "input $(basename "$f") $(wc -c < "$f" | tr -d ' ') $(head -c 40 "$f")"; fi
  done
} > results/summary.csv
echo "work done" > work.log
echo "cluster_work ran with: $*"
if [ "$1" = "sleep" ]; then sleep "$2"; fi
exit 0
