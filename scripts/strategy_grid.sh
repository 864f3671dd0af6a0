#!/bin/bash
# The strategy grid of docs/results: every strategy × seed on each named shift pair, at the issue-#14 budget.
# Seed rounds are the outer loop, so a grid stopped early still has every strategy at equal seeds; finished
# runs are reused, so running it again resumes. One torch thread, idle CPU priority.
#   scripts/strategy_grid.sh PAIR [PAIR ...]        (two processes on two cores: split the pairs)
# Environment: SEEDS (5: adawm, policy, model, none; alternate too on known_side=both pairs, where it is the
# oracle), BASELINE_SEEDS (3: alternate elsewhere, full), STEPS (3000), OUT (runs/experiments),
# EXTRA (more `adawm experiment` flags), ONLY (these strategies alone), FIRST_ROUND (1; a later one adds
# seeds to a pair whose earlier rounds are in docs/results/runs.csv only: the report merges them by run).
# The C sweep, e.g.:
#   ONLY=adawm SEEDS=3 EXTRA="--threshold-c 5" OUT=runs/c-sweep/c5 scripts/strategy_grid.sh dynamics lag_density
# After each run the finished runs are evaluated again in plan mode (experiments/final_eval.py), and
# what the report needs of each complete run (result.json, curve.csv, trace.csv, after_plan.json; not the
# adapters) is copied to KEEP (docs/results/raw/<OUT below runs/>) and committed there, that path alone: a
# session's processes and its runs/ end with it. A run kept there and missing from OUT is copied back before
# the grid starts, so the grid resumes on a fresh clone too.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
SEEDS=${SEEDS:-5} FIRST_ROUND=${FIRST_ROUND:-1} BASELINE_SEEDS=${BASELINE_SEEDS:-3}
STEPS=${STEPS:-3000} OUT=${OUT:-runs/experiments}
KEEP=${KEEP:-docs/results/raw/${OUT#runs/}}
py=.venv/bin/python
RUN_FILES="result.json curve.csv trace.csv after_plan.json"

keep() {   # keep PAIR: the complete runs of OUT/PAIR into KEEP/PAIR, committed
  local run
  for run in "$OUT/$1"/*/seed*; do
    [ -f "$run/result.json" ] || continue
    [ -f "$run/after_plan.json" ] || grep -q '"strategy": "full"' "$run/result.json" || continue
    local dest="$KEEP/$1/${run#"$OUT/$1/"}"
    mkdir -p "$dest"
    for f in $RUN_FILES; do [ -f "$run/$f" ] && cp "$run/$f" "$dest/"; done
  done
  [ -d "$KEEP/$1" ] || return 0
  # not fatal (e.g. someone else holds the index lock): the next run's keep commits it
  { git add -- "$KEEP/$1" && { git diff --cached --quiet -- "$KEEP/$1" ||
      git commit -q -m "strategy grid: $1 runs so far ($(date -u +%FT%TZ))" -- "$KEEP/$1"; }; } ||
    echo "strategy_grid: could not commit $KEEP/$1 now; kept on disk" >&2
}

for pair in "$@"; do   # runs kept by an earlier session, missing here
  [ -d "$KEEP/$pair" ] || continue
  for kept in "$KEEP/$pair"/*/seed*; do
    run="$OUT/$pair/${kept#"$KEEP/$pair/"}"
    [ -f "$run/result.json" ] && continue
    mkdir -p "$run" && cp "$kept"/* "$run/"
  done
done
for ((round = FIRST_ROUND; round <= SEEDS; round++)); do
  for pair in "$@"; do
    known=$($py -c "from adawm_planner.sim import shift_pairs; print(shift_pairs()['$pair'].get('known_side', ''))")
    strategies="adawm policy model none"
    if [ "$known" = both ] || [ $round -le "$BASELINE_SEEDS" ]; then strategies="$strategies alternate"; fi
    if [ $round -le "$BASELINE_SEEDS" ]; then strategies="$strategies full"; fi
    strategies=${ONLY:-$strategies}
    echo "=== $(date -u +%FT%TZ) seed round $round, $pair: $strategies"
    for strategy in $strategies; do   # one at a time, each kept as soon as it is complete
      chrt --idle 0 $py -m adawm_planner.cli experiment --pair "$pair" --first-seed $((round - 1)) --seeds $round \
        --strategies $strategy --steps "$STEPS" --eval-every $((STEPS / 5)) --eval-episodes 20 --out "$OUT/$pair" \
        ${EXTRA:-}
      # the final agent again in plan mode (where a model step reaches the road directly)
      chrt --idle 0 $py -m adawm_planner.experiments.final_eval "$OUT/$pair" --mode plan --episodes 20
      keep "$pair"
    done
  done
done
echo "=== $(date -u +%FT%TZ) done; publish with: $py -m adawm_planner.experiments.report $OUT docs/results"
