"""Does planning earn its cost? The shipped checkpoint evaluated with the existing evaluation loop
(experiments/pretrain.py evaluate: seeds 10000.., the same for every mode) in actor mode, with the
one-round planner (actor samples only, `iterations` 1) and with the iterative search (PlannerConfig's
search knobs), on the pretraining task and shifted tasks; and the lookahead's latency, one round vs the
search, interleaved in one process.

One JSON line per (task, mode) is appended to --out as each finishes, and a (task, mode, knobs) already
in the file is skipped, so a killed run resumes where it stopped. Print the table of a results file with
--table.

    OMP_NUM_THREADS=1 chrt --idle 0 .venv/bin/python bench/bench_plan_search.py --episodes 50 \
        --tasks right_turn-moderate right_turn_tight-moderate --out runs/plan_search.jsonl
    .venv/bin/python bench/bench_plan_search.py --latency 300
    .venv/bin/python bench/bench_plan_search.py --table runs/plan_search.jsonl
    .venv/bin/python bench/bench_plan_search.py --foresight --episodes 20 --tasks right_turn_tight-moderate
"""
import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from adawm_planner.core.checkpoint import load_checkpoint
from adawm_planner.core.config import PlannerConfig
from adawm_planner.core.planner import plan
from adawm_planner.experiments.pretrain import evaluate

MODES = ('actor', 'plan-1round', 'plan-search')
SEARCH_KNOBS = ('iterations', 'elites', 'particles', 'refit_mix')


def search_config(mode, overrides):
    """The PlannerConfig a mode plans with: one round for 'plan-1round', the knobs (defaults + overrides)
    for 'plan-search'."""
    if mode == 'plan-1round':
        return PlannerConfig(iterations=1)
    return PlannerConfig(**overrides)


def knob_values(config):
    """The knobs that change what a mode plans: one round ignores all but `iterations`."""
    if config.iterations == 1:
        return {'iterations': 1}
    return {name: getattr(config, name) for name in SEARCH_KNOBS}


def evaluate_modes(args, overrides):
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    for task in args.tasks:
        for mode in args.modes:
            search = search_config(mode, overrides) if mode != 'actor' else None
            key = {'task': task, 'mode': mode, 'episodes': args.episodes,
                   'search': knob_values(search) if search else None}
            if any(all(row.get(k) == v for k, v in key.items()) for row in done):
                continue
            agent, _ = load_checkpoint(args.checkpoint)   # fresh: every mode starts from the same generator
            if search:
                agent.search = search
            started = time.perf_counter()
            metrics = evaluate(agent, task, args.episodes, 'actor' if mode == 'actor' else 'plan')
            row = {**key, **metrics, 'wall_s': round(time.perf_counter() - started, 1)}
            with out.open('a') as f:
                f.write(json.dumps(row) + '\n')
            print(json.dumps(row), flush=True)


def latency(args, overrides):
    """Lookahead latency from one filtered state of the pretraining task, one round vs the search,
    interleaved call by call (no deadline: the full horizon and every iteration)."""
    agent, _ = load_checkpoint(args.checkpoint)
    from adawm_planner.sim import make_env
    env = make_env('right_turn-moderate', seed=0)
    obs, _ = env.reset(seed=0)
    state = None
    for _ in range(20):   # a state a few steps into an episode
        action, state, _ = agent.act(obs, state, 'actor')
        obs, *_ = env.step(action)
    latent, p = state['latent'], agent.preset
    configs = {'plan-1round': search_config('plan-1round', overrides),
               'plan-search': search_config('plan-search', overrides)}
    times = {mode: [] for mode in configs}
    for i in range(args.latency + 10):
        for mode, config in configs.items():
            started = time.perf_counter()
            plan(agent.world_model, agent.actor_critic, latent, p.plan_candidates, p.plan_horizon,
                 p.plan_prior_weight, agent.generator, search=config)
            if i >= 10:   # warm-up
                times[mode].append(time.perf_counter() - started)
    for mode, samples in times.items():
        ms = np.array(samples) * 1e3
        print(json.dumps({'latency': mode, 'K': p.plan_candidates, 'H': p.plan_horizon,
                          'search': knob_values(configs[mode]), 'calls': len(ms),
                          'p50_ms': round(float(np.percentile(ms, 50)), 2),
                          'p99_ms': round(float(np.percentile(ms, 99)), 2)}))


def foresight(args):
    """Does the model see a collision coming? Actor-mode episodes (evaluation seeds) on each task; at every
    step a one-round plan (K, H of the preset) from the filtered state, without acting on it: the imagined
    probability that the episode is still running H steps on (the product of the continue heads) for the
    actor's own plan (candidate 0) and for the best-scored candidate, and the score margin best - actor.
    Averaged over the last 10 steps before a collision and over the steps of successful episodes."""
    from adawm_planner.core.planner import plan
    from adawm_planner.experiments.pretrain import EVAL_SEED
    from adawm_planner.sim import make_env
    for task in args.tasks:
        agent, _ = load_checkpoint(args.checkpoint)
        p = agent.preset
        env = make_env(task, seed=EVAL_SEED)
        groups = {'collision, last 10 steps': [], 'success, all steps': []}
        for episode in range(args.episodes):
            obs, _ = env.reset(seed=EVAL_SEED + episode)
            state, steps, done = None, [], False
            while not done:
                action, state, _ = agent.act(obs, state, 'actor')
                _, info = plan(agent.world_model, agent.actor_critic, state['latent'], p.plan_candidates,
                               p.plan_horizon, p.plan_prior_weight, agent.generator)
                alive = info['conts'].prod(1)
                steps.append((float(alive[0]), float(alive[info['best']]),
                              float(info['scores'][info['best']] - info['scores'][0])))
                obs, _, terminated, truncated, env_info = env.step(action)
                done = terminated or truncated
            if env_info['collision']:
                groups['collision, last 10 steps'] += steps[-10:]
            elif env_info['success']:
                groups['success, all steps'] += steps
        for group, rows in groups.items():
            if rows:
                mean = np.array(rows).mean(0)
                print(json.dumps({'foresight': task, 'episodes': args.episodes, 'steps': group, 'n': len(rows),
                                  'alive_H_actor_plan': round(float(mean[0]), 3),
                                  'alive_H_best_plan': round(float(mean[1]), 3),
                                  'score_margin_best_minus_actor': round(float(mean[2]), 2)}), flush=True)


def table(path):
    """Success (collision / off-route / timeout) per task and mode, the newest row of each."""
    rows = {(r['task'], r['mode']): r for r in map(json.loads, Path(path).read_text().splitlines())}
    tasks = list(dict.fromkeys(task for task, _ in rows))
    print('| task | ' + ' | '.join(MODES) + ' |')
    print('|---|' + '---|' * len(MODES))
    for task in tasks:
        cells = []
        for mode in MODES:
            r = rows.get((task, mode))
            cells.append(f"**{r['success']:.2f}** ({r['collision']:.2f} / {r['off_route']:.2f} / {r['timeout']:.2f}), "
                         f"{r['episodes']} ep., {r['wall_s'] / 60:.0f} min" if r else 'not run')
        print(f'| {task} | ' + ' | '.join(cells) + ' |')
    searches = {json.dumps(r['search']) for r in rows.values() if r['mode'] == 'plan-search'}
    print(f'\nplan-search knobs: {", ".join(sorted(searches))}')


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--checkpoint', default='checkpoints/right_turn-moderate-small')
    parser.add_argument('--tasks', nargs='+', default=['right_turn-moderate'])
    parser.add_argument('--modes', nargs='+', choices=MODES, default=list(MODES))
    parser.add_argument('--episodes', type=int, default=50)
    parser.add_argument('--out', default='runs/plan_search.jsonl')
    parser.add_argument('--latency', type=int, default=0, help='time N lookaheads per mode instead of evaluating')
    parser.add_argument('--table', help='print the markdown table of a results file and exit')
    parser.add_argument('--foresight', action='store_true',
                        help='actor-mode episodes of --tasks: does the planner imagine the collisions coming?')
    parser.add_argument('--knob', action='append', default=['iterations=3'], metavar='NAME=VALUE',
                        help=f'a search knob for plan-search ({", ".join(SEARCH_KNOBS)}): iterations 3 (the '
                        'setting measured in docs/world_model.md), the others PlannerConfig\'s defaults')
    args = parser.parse_args()
    if args.table:
        return table(args.table)
    torch.set_num_threads(1)
    fields = {f.name: f.type for f in dataclasses.fields(PlannerConfig)}
    overrides = {}
    for item in args.knob:
        name, value = item.split('=', 1)
        if name not in SEARCH_KNOBS:
            parser.error(f'--knob {name}: not one of {SEARCH_KNOBS}')
        overrides[name] = (int if fields[name] in (int, 'int') else float)(value)
    if args.latency:
        return latency(args, overrides)
    if args.foresight:
        return foresight(args)
    evaluate_modes(args, overrides)


if __name__ == '__main__':
    main()
