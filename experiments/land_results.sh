#!/usr/bin/env bash
# Commit each finished run's small result files as they land (never checkpoints or audio):
#   experiments/land_results.sh [interval seconds]   (runs until stopped; run from the repo root)
# Pairs of <sweep dir> <committed folder>, the study's sweeps first.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
PAIRS=(
  runs/multirun/context_control_arms_cpu experiments/results/context_control/runs
  runs/multirun/context_control_near_arms_cpu experiments/results/context_control_near/runs
  runs/multirun/context_study_rendered experiments/results/context_rendered/runs
  runs/multirun/context_control_whole_arms_cpu experiments/results/context_control_whole/runs
)
while true; do
  for ((i = 0; i < ${#PAIRS[@]}; i += 2)); do
    sweep=${PAIRS[i]} dest=${PAIRS[i + 1]}
    [ -d "$sweep" ] || continue
    $PY -m longsep.study.collect "$sweep" "$dest" >/dev/null || continue
    # commit whatever is not committed yet (also what a commit that lost a race left behind)
    if [ -d "$dest" ] && [ -n "$(git status --porcelain -- "$dest")" ]; then
      git add -- "$dest" && git commit -q -m "Results landed: $(basename "$sweep") ($(date -u +%FT%TZ))" -- "$dest" \
        && echo "committed $dest"
    fi
  done
  sleep "${1:-300}"
done
