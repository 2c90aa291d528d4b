#!/bin/bash
# One DVC stage on several nodes under SLURM (docs/guides/gpus-and-clusters.md).
#
#   sbatch --nodes=2 --gpus-per-node=8 examples/slurm_stage.sh vat
#
# params.yaml must hold the same layout: compute.nnodes = the nodes (2), compute.nproc_per_node = the GPUs per
# node (8), compute.device cuda. The repository (code, params, data, models) must be on a filesystem every node
# sees. DVC runs on the first node (`dvc repro --single-item`: it checks the stage's inputs, runs its command and
# records the outputs in dvc.lock); every other node runs the same command without DVC. On each node the stage
# starts its ranks under torch's elastic agent, and the agents meet at the first node (c10d rendezvous).
#SBATCH --ntasks-per-node=1
#SBATCH --job-name=videoda-stage
set -euo pipefail
STAGE=${1:?usage: sbatch --nodes=N examples/slurm_stage.sh STAGE}
cd "${SLURM_SUBMIT_DIR:-.}"
# Up to date: nothing to run (the other nodes would wait for a first node that never starts the stage).
if dvc status --quiet "$STAGE"; then
    echo "$STAGE is up to date"
    exit 0
fi
HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)   # sed reads all: no SIGPIPE under pipefail
export VIDEODA_RDZV_ENDPOINT="$HEAD_NODE:${VIDEODA_RDZV_PORT:-29400}"
CMD=$(python -m videoda stage-command "$STAGE")
# One task per node; a task that fails ends the others (--kill-on-bad-exit).
srun --kill-on-bad-exit=1 bash -c '
    if [ "$SLURM_NODEID" = 0 ]; then exec dvc repro --single-item "$1"; else eval "exec $2"; fi
' _ "$STAGE" "$CMD"
