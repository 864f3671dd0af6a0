"""Env steps per second per task (single process, BEV 64×64, random discrete actions, resets included)
and the BEV rasteriser alone.

    .venv/bin/python bench/bench_sim.py [--steps 2000] [--tasks right_turn-dense roundabout-moderate ...]
"""
import argparse
import time

import numpy as np

from adawm_planner.core.bev import rasterize
from adawm_planner.sim import make_env

DEFAULT_TASKS = ['right_turn-moderate', 'right_turn-dense', 'left_turn-dense', 'right_turn_narrow-moderate',
                 'roundabout-moderate', 'roundabout-dense', 'lane_merge-moderate', 'highway_overtake-moderate']


def env_rate(task, steps):
    env = make_env(task, seed=0)
    env.reset()
    actions = np.random.default_rng(0).integers(0, 15, steps)
    actions[:] = np.where(actions % 5 == 2, actions, 7 + 5 * (actions // 10))   # mostly straight: longer episodes
    start = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(int(action))
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start), env


def bev_ms(env, repeats):
    scene = env.scene()
    rasterize(scene)
    start = time.perf_counter()
    for _ in range(repeats):
        rasterize(scene)
    return 1e3 * (time.perf_counter() - start) / repeats


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--steps', type=int, default=2000)
    parser.add_argument('--tasks', nargs='+', default=DEFAULT_TASKS)
    args = parser.parse_args()
    print('| task | env steps/s | BEV 64×64 ms | agents at end |')
    print('|---|---|---|---|')
    for task in args.tasks:
        rate, env = env_rate(task, args.steps)
        print(f'| {task} | {rate:.0f} | {bev_ms(env, 500):.3f} | {len(env.scene().agents)} |', flush=True)


if __name__ == '__main__':
    main()
