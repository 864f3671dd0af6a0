#!/bin/bash
# The strategy grid of docs/results: every strategy × seed on each named shift pair, at the issue-#14 budget.
# Seed rounds are the outer loop, so a grid stopped early still has every strategy at equal seeds; finished
# runs are reused, so running it again resumes. One torch thread, idle CPU priority.
#   scripts/strategy_grid.sh PAIR [PAIR ...]        (two processes on two cores: split the pairs)
# Environment: SEEDS (5: adawm, policy, model, none; alternate too on known_side=both pairs, where it is the
# oracle), BASELINE_SEEDS (3: alternate elsewhere, full), STEPS (3000), OUT (runs/experiments),
# EXTRA (more `adawm experiment` flags), ONLY (these strategies alone). The C sweep, e.g.:
#   ONLY=adawm SEEDS=3 EXTRA="--threshold-c 5" OUT=runs/c-sweep/c5 scripts/strategy_grid.sh dynamics lag_density
# After each pair's round its finished runs are evaluated again in plan mode (experiments/final_eval.py).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
SEEDS=${SEEDS:-5} BASELINE_SEEDS=${BASELINE_SEEDS:-3} STEPS=${STEPS:-3000} OUT=${OUT:-runs/experiments}
py=.venv/bin/python
for ((round = 1; round <= SEEDS; round++)); do
  for pair in "$@"; do
    known=$($py -c "from adawm_planner.sim import shift_pairs; print(shift_pairs()['$pair'].get('known_side', ''))")
    strategies="adawm policy model none"
    if [ "$known" = both ] || [ $round -le "$BASELINE_SEEDS" ]; then strategies="$strategies alternate"; fi
    if [ $round -le "$BASELINE_SEEDS" ]; then strategies="$strategies full"; fi
    strategies=${ONLY:-$strategies}
    echo "=== $(date -u +%FT%TZ) seed round $round, $pair: $strategies"
    chrt --idle 0 $py -m adawm_planner.cli experiment --pair "$pair" --seeds $round --strategies $strategies \
      --steps "$STEPS" --eval-every $((STEPS / 5)) --eval-episodes 20 --out "$OUT/$pair" ${EXTRA:-}
    # the final agents again in plan mode (where a model step reaches the road directly)
    chrt --idle 0 $py -m adawm_planner.experiments.final_eval "$OUT/$pair" --mode plan --episodes 20
  done
done
echo "=== $(date -u +%FT%TZ) done; publish with: $py -m adawm_planner.experiments.report $OUT docs/results"
