"""Does the task's reward rank the episodes' outcomes as success does?

A strategy can raise its agents' return while their success falls when the task's reward pays some failure
more than an arrival — then a better optimiser of that reward looks like a worse driver. This evaluates
finished finetuning runs' final agents (the checkpoint with each run's exported adapters, as
experiments/final_eval.py loads them) on the grid's evaluation episodes (seeds 10000+, the same noise for
every agent) and prints, per agent, the episodes of each outcome with their mean return and length.

    .venv/bin/python bench/bench_reward_outcomes.py runs/experiments/steering/{none,model}/seed3 --mode plan
"""
import argparse
import time
from pathlib import Path

import numpy as np
import torch

from adawm_planner.experiments.final_eval import agent_after
from adawm_planner.experiments.pretrain import evaluation_episodes

OUTCOMES = ('success', 'collision', 'off_route', 'timeout')


def by_outcome(rows) -> dict:
    """outcome -> (episodes, mean return, mean length) over the episodes that ended so."""
    table = {}
    for outcome in OUTCOMES:
        ended = [r for r in rows if r[outcome]]
        table[outcome] = (len(ended), float(np.mean([r['return'] for r in ended])) if ended else float('nan'),
                          float(np.mean([r['length'] for r in ended])) if ended else float('nan'))
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('runs', nargs='+', help='finished runs (STRATEGY/seedN folders with result.json)')
    parser.add_argument('--mode', default='plan', choices=('plan', 'actor'))
    parser.add_argument('--episodes', type=int, default=20)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    started = time.time()
    print(f'bench_reward_outcomes: {args.episodes} evaluation episodes per agent, {args.mode} mode')
    print('| run | task | success | return | ' + ' | '.join(f'{o}: n, return, length' for o in OUTCOMES) +
          ' |\n|' + '---|' * (len(OUTCOMES) + 4))
    for run in args.runs:
        agent, result = agent_after(run)
        rows = evaluation_episodes(agent, result['task'], args.episodes, args.mode)
        cells = [f'{n}, {ret:.1f}, {length:.0f}' if n else '0' for n, ret, length in by_outcome(rows).values()]
        name = '/'.join(Path(run).parts[-2:])
        print(f'| {name} | {result["task"]} | {np.mean([r["success"] for r in rows]):.2f} | '
              f'{np.mean([r["return"] for r in rows]):.1f} | ' + ' | '.join(cells) + ' |', flush=True)
    print(f'wall {time.time() - started:.0f} s')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
