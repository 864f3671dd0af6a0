"""How much better than the actor could the world model make the policy? A candidate policy-mismatch signal.

The paper's ε_π is the distance from the current policy to the best one for the new task; the rule's ε_π
today is a reward shortfall against the pretraining task, which a dynamics shift causes as much as a policy
one. Measured here instead, at states the actor reaches on a task (actor mode, seeds 60000+, every
`--every`-th step): the one-step improvement the current model offers,

  Q(s, a) = mean over M particles of Σ_{t=1..H} γ^(t−1) alive_t r̂_t + γ^H alive_H V(s_H)   (a, then the actor)
  ε(s)    = (max_a Q(s, a) − Σ_a π(a|s) Q(s, a)) / return scale (the actor-critic's 5th–95th percentile range)

with the same prior noise for every first action (common random numbers), H = 15, M = `--particles`
(core/mismatch.py improvement_scores, which the rule reads with `--policy-signal improvement`). High where
imagination shows something better than the actor; it can only see what the model predicts.

    .venv/bin/python bench/bench_improvement.py                     # the shipped checkpoint, every pair's task
    .venv/bin/python bench/bench_improvement.py --run runs/experiments/dynamics/model/seed0   # a repaired model
"""
import argparse
import sys

import numpy as np
import torch

from adawm_planner.core import mismatch
from adawm_planner.core.checkpoint import load_checkpoint
from adawm_planner.share import package_share
from adawm_planner.sim import default_task, make_env, shift_pairs

SEED = 60_000
HORIZON = 15


def improvement(agent, latent, particles: int, seed: int) -> float:
    states = {k: latent[k] for k in ('deter', 'stoch')}
    return float(mismatch.improvement_scores(agent.world_model, agent.actor_critic, states, HORIZON, agent.preset.gamma,
                                             particles, torch.Generator().manual_seed(seed))[0])


def measure(agent, task, episodes, every, particles) -> tuple[list[float], dict]:
    env = make_env(task, seed=SEED)
    values, outcomes = [], {}
    for e in range(episodes):
        obs, _ = env.reset(seed=SEED + e)
        agent.generator.manual_seed(SEED + e)
        state, done, t = None, False, 0
        while not done:
            action, state, _ = agent.act(obs, state, 'actor')
            if t % every == 0:
                values.append(improvement(agent, state['latent'], particles, 1000 * e + t))
            obs, _, terminated, truncated, info = env.step(action)
            done, t = terminated or truncated, t + 1
        outcome = next(k for k in ('success', 'collision', 'off_route', 'timeout') if info[k])
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    env.close()
    return values, outcomes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--checkpoint', default=str(package_share() / 'checkpoints' / 'right_turn-moderate-small'))
    parser.add_argument('--run', default=None, help='a finished finetuning run: its agent with its adapters')
    parser.add_argument('--tasks', nargs='+', default=None)
    parser.add_argument('--episodes', type=int, default=4)
    parser.add_argument('--every', type=int, default=3, help='measure at every N-th step')
    parser.add_argument('--particles', type=int, default=8)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.run:
        from adawm_planner.experiments.final_eval import agent_after
        agent, result = agent_after(args.run)
        tasks, label = args.tasks or [result['task']], f"{args.run} ({result['strategy']})"
    else:
        agent, _ = load_checkpoint(args.checkpoint)
        tasks = args.tasks or list(dict.fromkeys([default_task()] + [p['finetune'] for p in shift_pairs().values()]))
        label = args.checkpoint
    print(f'bench_improvement: {label}; {args.episodes} episodes per task in actor mode, every {args.every}th '
          f'step, {args.particles} particles x H {HORIZON}')
    print(f'{"task":46s} {"states":>6s} {"mean":>7s} {"p90":>7s}  outcomes')
    for task in tasks:
        values, outcomes = measure(agent, task, args.episodes, args.every, args.particles)
        print(f'{task:46s} {len(values):6d} {np.mean(values):7.4f} {np.percentile(values, 90):7.4f}  {outcomes}',
              flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
