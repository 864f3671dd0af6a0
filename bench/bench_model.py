"""Benchmark of the learning core with a preset (default `small`): act() latency (actor-only and
imagination planning with the preset's K candidates × H steps), the lookahead alone and under a budget
(the anytime planner: how many steps of lookahead it could afford), world-model and full (model + actor-critic)
train steps/s, pretraining throughput at the preset's train ratio, and peak memory. Prints a markdown table.

    .venv/bin/python bench/bench_model.py --preset small --threads 1
"""
import argparse
import platform
import resource
import time

import numpy as np
import torch

from adawm_planner.core.agent import Agent
from adawm_planner.core.guard import PlanBudget
from adawm_planner.core.presets import load_preset
from adawm_planner.core.learner import Learner
from adawm_planner.core.planner import plan
from adawm_planner.core.replay import Replay


def percentiles(samples):
    ms = np.array(samples) * 1e3
    return np.percentile(ms, 50), np.percentile(ms, 99)


def observation_shapes(task):
    from adawm_planner.sim import make_env
    env = make_env(task, seed=0)
    return env.observation_space['bev'].shape, env.observation_space['ego'].shape[0], env


def synthetic_batch(batch, length, bev_shape, ego_dim, actions, rng):
    return {'bev': torch.from_numpy(rng.integers(0, 2, (batch, length, *bev_shape), dtype=np.uint8) * 255),
            'ego': torch.randn(batch, length, ego_dim),
            'action': torch.nn.functional.one_hot(torch.randint(0, actions, (batch, length)), actions).float(),
            'reward': torch.randn(batch, length), 'is_first': torch.zeros(batch, length, dtype=torch.bool),
            'is_terminal': torch.zeros(batch, length, dtype=torch.bool)}


def throughput(agent, learner, env, preset, steps):
    """Pretraining's loop at the preset's train ratio (act, env step, replay, an update every
    batch * seq_len / train_ratio env steps), after a random prefill of one batch's worth of steps."""
    replay = Replay(steps + preset.batch * preset.seq_len + 1, env.observation_space['bev'].shape,
                    agent.world_model.ego_dim, agent.action_dim)
    obs, _ = env.reset(seed=1)
    replay.add(obs, np.zeros(agent.action_dim), 0.0, True, False)
    for _ in range(preset.batch * preset.seq_len):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        replay.add(obs, np.zeros(agent.action_dim), reward, False, terminated)
        if terminated or truncated:
            obs, _ = env.reset()
            replay.add(obs, np.zeros(agent.action_dim), 0.0, True, False)
    owed, state, updates = 0.0, None, 0
    start = time.perf_counter()
    for _ in range(steps):
        action, state, _ = agent.act(obs, state, 'sample')
        obs, reward, terminated, truncated, _ = env.step(action)
        replay.add(obs, agent.encode_action(action).numpy(), reward, False, terminated)
        if terminated or truncated:
            obs, _ = env.reset()
            replay.add(obs, np.zeros(agent.action_dim), 0.0, True, False)
            state = None
        owed += preset.train_ratio / (preset.batch * preset.seq_len)
        while owed >= 1:
            learner.update(replay.sample(preset.batch, preset.seq_len))
            owed, updates = owed - 1, updates + 1
    seconds = time.perf_counter() - start
    return (f'pretraining throughput (train ratio {preset.train_ratio}, {steps} env steps, {updates} updates)',
            f'{steps / seconds:.1f} env steps/s')


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--preset', default='small')
    parser.add_argument('--task', default=None, help='take observation shapes and frames from this task')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--ticks', type=int, default=300, help='act() calls per mode')
    parser.add_argument('--updates', type=int, default=10, help='train steps to time')
    parser.add_argument('--budget-ms', type=float, nargs='+', default=[10.0, 25.0],
                        help="the anytime planner's budgets to measure")
    parser.add_argument('--throughput-steps', type=int, default=320,
                        help='env steps of the pretraining-throughput loop')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    from adawm_planner.sim import default_task
    task = args.task or default_task()
    bev_shape, ego_dim, env = observation_shapes(task)
    preset = load_preset(args.preset)
    agent = Agent(preset, bev_shape, ego_dim, 15)
    params = sum(p.numel() for p in agent.parameters())

    # Real frames from the env, so the filter sees what it sees in the node.
    obs, _ = env.reset(seed=0)
    frames = []
    for _ in range(args.ticks):
        frames.append(obs)
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            obs, _ = env.reset()
    rows = []
    for mode in ['actor', 'plan']:
        state, times = None, []
        for i, frame in enumerate(frames):
            start = time.perf_counter()
            _, state, _ = agent.act(frame, state, mode)
            if i >= 10:  # warm-up
                times.append(time.perf_counter() - start)
        p50, p99 = percentiles(times)
        label = 'act, actor only' if mode == 'actor' else \
            f'act, planning K={preset.plan_candidates} H={preset.plan_horizon}'
        rows.append((label, f'p50 {p50:.2f} ms, p99 {p99:.2f} ms'))

    # The lookahead alone (no filter step), and the anytime planner under a budget: what it could afford.
    latent = state['latent']
    k, h = preset.plan_candidates, preset.plan_horizon
    for budget in [None, *args.budget_ms]:
        times, horizons, budgeting = [], [], PlanBudget((budget or 0) / 1e3)   # as the planner node keeps it
        for i in range(args.ticks):
            start = time.perf_counter()
            _, info = plan(agent.world_model, agent.actor_critic, latent, k, h, preset.plan_prior_weight,
                           agent.generator, budgeting.deadline(start), budgeting.step_estimate,
                           budgeting.score_estimate)
            budgeting.record(info)
            if i >= 10:
                times.append(time.perf_counter() - start)
                horizons.append(info['horizon'])
        p50, p99 = percentiles(times)
        if budget is None:
            rows.append((f'lookahead alone K={k} H={h}', f'p50 {p50:.2f} ms, p99 {p99:.2f} ms'))
        else:
            rows.append((f'anytime lookahead K={k}, {budget:g} ms budget',
                         f'answer p50 {p50:.2f} ms, p99 {p99:.2f} ms; horizon reached: median '
                         f'{np.median(horizons):.0f}, min {min(horizons)} of {h}; '
                         f'actor fallback {np.mean(np.array(horizons) == 0):.0%}'))

    learner = Learner(agent)
    rows.append(throughput(agent, learner, env, preset, args.throughput_steps))
    for batch, length, what in [(16, 64, 'world-model train step, batch 16×64'),
                                (preset.batch, preset.seq_len,
                                 f'full update (model + actor-critic), batch {preset.batch}×{preset.seq_len}')]:
        data = synthetic_batch(batch, length, bev_shape, ego_dim, 15, rng)
        times = []
        for i in range(args.updates + 2):
            start = time.perf_counter()
            if what.startswith('world-model'):
                loss, _ = agent.world_model.loss(data)
                learner.model_opt.zero_grad()
                loss.backward()
                learner.model_opt.step()
            else:
                learner.update(data)
            if i >= 2:
                times.append(time.perf_counter() - start)
        mean = float(np.mean(times))
        rows.append((what, f'{1 / mean:.2f} steps/s ({mean * 1e3:.0f} ms/step)'))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows.append(('peak memory (RSS, whole process)', f'{peak:.0f} MiB'))

    print(f'preset {args.preset}: {params / 1e6:.2f} M parameters; task {task} (BEV {bev_shape}, ego {ego_dim}); '
          f'torch {torch.__version__}, {args.threads} threads, {platform.machine()}')
    print('| measure | result |\n|---|---|')
    for name, value in rows:
        print(f'| {name} | {value} |')


if __name__ == '__main__':
    main()
