#!/usr/bin/env bash
# `make study-context` from a copy of the code pinned at a commit (default HEAD), checked out
# as a git worktree in .sweep/: the sweep runs for hours while the working tree is edited, and
# a job started later must import the code the sweep started with (a changed callback once
# failed 8 control jobs at their start). Data, runs/ and results stay in this checkout
# (LONGSEP_ROOT); the pinned package comes first on PYTHONPATH, before the editable install.
#   experiments/run_pinned.sh [commit]                   the whole make, reports included
#   experiments/run_pinned.sh commit experiment [...]    only these sweeps, in order (e.g. a grid
#                                                        whose report must wait: no report runs)
#   experiments/run_pinned.sh commit experiment [...] -- override [...]
#                                                        the same, each sweep with these Hydra
#                                                        overrides (e.g. the spread rule's seed 46:
#                                                        hydra.sweeper.params.seed=46
#                                                        "hydra.sweeper.params.arm='B,C'")
set -eu
cd "$(dirname "$0")/.."
root=$(pwd)
commit=$(git rev-parse "${1:-HEAD}")
experiments=()
if [ $# -gt 1 ]; then  # checked before .sweep/ moves: a sweep may be running from it
  shift
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    experiments+=("$1")
    shift
  done
  [ $# -gt 0 ] && shift  # the "--"
  [ ${#experiments[@]} -gt 0 ] || { echo "error: no experiment named before --" >&2; exit 2; }
fi
if [ -d .sweep ]; then
  git -C .sweep checkout -q --detach "$commit"
else
  git worktree add -q --detach .sweep "$commit"
fi
echo "sweep code pinned at $commit (.sweep/)"
export LONGSEP_ROOT="$root" PYTHONPATH="$root/.sweep/src${PYTHONPATH:+:$PYTHONPATH}"
if [ ${#experiments[@]} -gt 0 ]; then
  for experiment in "${experiments[@]}"; do
    OMP_NUM_THREADS=1 "$root/.venv/bin/python" .sweep/train.py +experiment="$experiment" \
      hydra/launcher=joblib hydra.launcher.n_jobs=2 "$@"
  done
  exit 0
fi
exec make -f .sweep/Makefile study-context-steps SCRIPTS=.sweep BIN="$root/.venv/bin"
