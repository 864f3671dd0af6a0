"""One finetuning run on a new task, and the strategy table over a shift pair.

A run: load the pretrained checkpoint, drive the new task with the agent's own (sampled) actions, and every
`train_every` environment steps take one finetuning step of the chosen strategy on the new-task replay,
measuring ε_P and ε_π on the newest `window` steps. Evaluate before finetuning and every `eval_every`
steps. Everything a run produces lands in its own folder; a folder with result.json is a finished run
and is skipped when an experiment is started again, so an interrupted experiment resumes where it stopped.
"""
from __future__ import annotations

import collections
import csv
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from adawm_planner.core.adaptation import Finetuner
from adawm_planner.core.config import STRATEGIES, FinetuneConfig
from adawm_planner.core.checkpoint import load_checkpoint
from adawm_planner.core.replay import Replay
from adawm_planner.experiments.pretrain import evaluate
from adawm_planner.experiments.report import write_report
from adawm_planner.experiments.runlog import RunLog, bev_comparison
from adawm_planner.sim import make_env as make_task_env

CURVE_FIELDS = ['env_step', 'success', 'collision', 'off_route', 'timeout', 'ttc_min', 'return']
TRACE_FIELDS = ['finetune_step', 'env_step', 'eps_model', 'eps_policy', 'eps_policy_episodes', 'eps_policy_max',
                'visitation_tv', 'tv_prior_posterior', 'tv_policy', 'eps_policy_reward', 'decision']


def finetune(checkpoint_dir, task, steps, out_dir, seed=0, config: FinetuneConfig = FinetuneConfig(),
             eval_every=1000, eval_episodes=10, eval_mode='actor', make_env=make_task_env, progress=True):
    """Runs `config.strategy` on `task` for `steps` environment steps; returns the run's result."""
    strategy, train_every = config.strategy, config.train_every
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    agent, meta = load_checkpoint(checkpoint_dir, seed=seed)
    tuner = Finetuner.from_checkpoint(agent, config, checkpoint_dir, driving_mode='sample')
    p = agent.preset
    env = make_env(task, seed=seed)
    replay = Replay(steps + 1, env.observation_space['bev'].shape, agent.world_model.ego_dim, agent.action_dim, seed)
    tuner.attach(replay)

    curve_file, trace_file = open(out_dir / 'curve.csv', 'w', newline=''), open(out_dir / 'trace.csv', 'w', newline='')
    curve, trace = csv.DictWriter(curve_file, CURVE_FIELDS), csv.DictWriter(trace_file, TRACE_FIELDS)
    curve.writeheader()
    trace.writeheader()
    log = RunLog(out_dir)   # the same figures for TensorBoard, and the model's view of the new task

    def evaluate_now(step):
        metrics = evaluate(agent, task, eval_episodes, eval_mode, make_env)
        row = {'env_step': step, **{k: metrics[k] for k in CURVE_FIELDS[1:]}}
        curve.writerow(row)
        curve_file.flush()
        log.scalars(step, {k: v for k, v in row.items() if k != 'env_step'}, 'eval/')
        if len(replay) >= p.seq_len:
            log.image(step, 'bev/real_over_decoded', bev_comparison(agent.world_model, replay, min(8, p.seq_len)))
        return metrics

    started = time.time()
    first_eval = evaluate_now(0)
    obs, _ = env.reset(seed=seed)
    replay.add(obs, np.zeros(agent.action_dim), 0.0, True, False)
    state, decisions = None, {'model': 0, 'policy': 0, 'both': 0, 'none': 0}
    failures = collections.deque(maxlen=config.outcome_window)   # of the latest finished episodes
    final = first_eval
    bar = tqdm(total=steps, disable=not progress, unit='step', desc=f'{strategy} on {task}')
    for step in range(1, steps + 1):
        action, state, _ = agent.act(obs, state, 'sample')
        obs, reward, terminated, truncated, info = env.step(action)
        replay.add(obs, agent.encode_action(action).numpy(), reward, False, terminated)
        if terminated or truncated:
            failures.append(not info['success'])
            obs, _ = env.reset()
            replay.add(obs, np.zeros(agent.action_dim), 0.0, True, False)
            state = None
        if step % train_every == 0 and len(replay) >= max(config.window, p.seq_len):
            window = {**replay.newest(config.window), 'failures': np.array(failures, np.float64)}
            out = tuner.step(replay.sample(p.batch, p.seq_len), window)
            decisions[out['decision']] += 1
            trace.writerow({'finetune_step': tuner.steps, 'env_step': step,
                            **{k: out.get(k, '') for k in TRACE_FIELDS[2:]}})
            log.scalars(step, {k: out[k] for k in TRACE_FIELDS[2:] if isinstance(out.get(k), float)}, 'mismatch/')
            if tuner.steps % 20 == 0:
                trace_file.flush()
        if step % eval_every == 0 or step == steps:
            final = evaluate_now(step)
            bar.set_postfix(success=f'{final["success"]:.2f}', refresh=False)
        bar.update(1)
    bar.close()
    env.close()
    curve_file.close()
    trace_file.close()
    log.close()

    adapters = tuner.save_adapters(out_dir)
    result = {'checkpoint': str(checkpoint_dir), 'pretrain_task': meta.get('task'), 'task': task,
              'strategy': strategy, 'seed': seed, 'steps': steps, 'finetune_steps': tuner.steps,
              'decisions': decisions, 'config': dataclasses.asdict(config), 'train_every': train_every,
              'before': first_eval, 'after': final, 'trainable': tuner.trainable_report(),
              'adapters': adapters, 'wall_s': round(time.time() - started, 1)}
    (out_dir / 'result.json').write_text(json.dumps(result, indent=2) + '\n')
    return result


def experiment(checkpoint_dir, pretrain_task, finetune_task, out_dir, seeds=3, strategies=STRATEGIES,
               steps=3000, config: FinetuneConfig = FinetuneConfig(), make_env=make_task_env, progress=True,
               workers=None, ray_address=None, first_seed=0, **run_kwargs):
    """Every strategy × seed (first_seed .. seeds - 1) on one shift pair (the other knobs from `config`);
    finished runs are reused. With `workers`, the unfinished runs go to Ray, `workers` at a time
    (experiments/scale.py), on a local instance or the cluster at `ray_address`. Returns the list of results."""
    out_dir = Path(out_dir)
    seeds = range(first_seed, seeds)
    if workers:
        from adawm_planner.experiments.scale import run_grid
        todo = [(s, seed, dataclasses.replace(config, strategy=s)) for s in strategies for seed in seeds
                if not (out_dir / s / f'seed{seed}' / 'result.json').exists()]
        run_grid(checkpoint_dir, finetune_task, todo, out_dir, workers, ray_address, make_env=make_env,
                 steps=steps, **run_kwargs)
    results = []
    for strategy in strategies:
        for seed in seeds:
            run_dir = out_dir / strategy / f'seed{seed}'
            done = run_dir / 'result.json'
            if done.exists():
                results.append(json.loads(done.read_text()))
                continue
            results.append(finetune(checkpoint_dir, finetune_task, steps, run_dir, seed,
                                    dataclasses.replace(config, strategy=strategy), make_env=make_env,
                                    progress=progress, **run_kwargs))
    write_report(out_dir, pretrain_task, finetune_task)
    return results
