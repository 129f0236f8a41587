#!/usr/bin/env bash
# Commit each finished run's small result files as they land (never checkpoints or audio):
#   experiments/land_results.sh [interval seconds]   (runs until stopped; run from the repo root)
# Triples of <sweep dir> <committed folder> <analysis that needs the weights>, the study's
# sweeps first. The analysis is scored first (one thread, at nice 19, beside the sweep):
# the weights never land, and a fresh machine loses them.
set -u
cd "$(dirname "$0")/.."
# The scoring must finish while the run's weights are on disk. Under Linux's scheduler
# autogroups (one per session: this loop runs in its own) `nice` ranks it only against its
# own session, so it still takes an equal share beside the sweep's trainings, on purpose:
# with its autogroup lowered too it starved (1 s of CPU a minute beside two trainings).
PY=${PYTHON:-.venv/bin/python}
SWEEPS=(
  runs/multirun/context_control_arms_cpu experiments/results/context_control/runs control
  runs/multirun/context_control_near_arms_cpu experiments/results/context_control_near/runs control
  runs/multirun/context_study_rendered experiments/results/context_rendered/runs intervention
  runs/multirun/context_control_whole_arms_cpu experiments/results/context_control_whole/runs control
)
while true; do
  for ((i = 0; i < ${#SWEEPS[@]}; i += 3)); do
    sweep=${SWEEPS[i]} dest=${SWEEPS[i + 1]} analysis=${SWEEPS[i + 2]}
    [ -d "$sweep" ] || continue
    OMP_NUM_THREADS=1 nice -n 19 $PY -m longsep.study.collect "$sweep" "$dest" --score "$analysis" \
      >/dev/null || echo "collect $sweep: exit $? ($(date -u +%FT%TZ))" >&2
    # commit whatever is not committed yet (also what a commit that lost a race left behind)
    if [ -d "$dest" ] && [ -n "$(git status --porcelain -- "$dest")" ]; then
      git add -- "$dest" && git commit -q -m "Results landed: $(basename "$sweep") ($(date -u +%FT%TZ))" -- "$dest" \
        && echo "committed $dest"
    fi
  done
  sleep "${1:-300}"
done
