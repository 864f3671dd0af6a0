"""Pretraining and evaluation loops (DreamerV3 recipe): act in the embedded env, store steps in replay,
and every `batch * seq_len / train_ratio` env steps take one Learner update. Evaluate periodically; save a
checkpoint (with the env's contract) each time.
"""
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from adawm_planner.core.agent import Agent
from adawm_planner.core.checkpoint import save_checkpoint
from adawm_planner.core.learner import Learner
from adawm_planner.core.presets import load_preset
from adawm_planner.core.replay import Replay
from adawm_planner.experiments.runlog import RunLog, bev_comparison
from adawm_planner.sim import default_task
from adawm_planner.sim import make_env as make_task_env

EVAL_SEED = 10_000  # evaluation episodes use seeds EVAL_SEED + i, never seen in training


def evaluate(agent, task, episodes, mode='plan', make_env=make_task_env, continuous=False):
    """Run `episodes` evaluation episodes; returns success/collision/off-route/timeout rates, TTC,
    route completion, return and length (means over the episodes of evaluation_episodes)."""
    rows = evaluation_episodes(agent, task, episodes, mode, make_env, continuous)
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def evaluation_episodes(agent, task, episodes, mode='plan', make_env=make_task_env, continuous=False):
    """Per evaluation episode: its outcome (success/collision/off_route/timeout as 0/1), TTC, route
    completion, return and length.

    Episode i runs on seed EVAL_SEED + i for the simulator and for the agent's sampling (the filter's latent
    draws, the planner's candidates): the same agent scores the same on every call, different agents meet
    the same noise (common random numbers), and evaluating leaves the agent's own generator, which
    training draws from, where it was."""
    env = make_env(task, seed=EVAL_SEED, continuous=continuous)
    rows, training_rng = [], agent.generator.get_state()
    for episode in range(episodes):
        obs, info = env.reset(seed=EVAL_SEED + episode)
        agent.generator.manual_seed(EVAL_SEED + episode)
        state, ret, length, ttcs, done = None, 0.0, 0, [], False
        while not done:
            action, state, _ = agent.act(obs, state, mode)
            obs, reward, terminated, truncated, info = env.step(action)
            ret, length = ret + reward, length + 1
            ttcs.append(float(info['ttc']))
            done = terminated or truncated
        rows.append({'success': float(info['success']), 'collision': float(info['collision']),
                     'off_route': float(info['off_route']), 'timeout': float(info['timeout']),
                     'ttc_min': min(ttcs), 'ttc_mean': float(np.mean(ttcs)),
                     'route_completion': float(info['route_completion']), 'return': ret, 'length': length})
    env.close()
    agent.generator.set_state(training_rng)
    return rows


def pretrain(task, preset, steps, out_dir, seed=0, eval_every=5000, eval_episodes=10, eval_mode='actor',
             time_limit_min=None, progress=True, continuous=False, make_env=make_task_env, checkpoint_dir=None,
             collectors=None, ray_address=None):
    """Pretrain an Agent on `task` for `steps` env steps. Returns (agent, last eval metrics).
    With `collectors`, that many Ray actors step the simulator while this process trains
    (experiments/scale.py), on a local Ray instance or the cluster at `ray_address`.

    Writes scalars.csv and TensorBoard events (scalars; real vs decoded BEV at each evaluation) to out_dir, and a checkpoint (with replay summary) to `checkpoint_dir`
    (default out_dir/checkpoint) after every evaluation and at the end."""
    if collectors:
        from adawm_planner.experiments.scale import pretrain_on_ray
        return pretrain_on_ray(task, preset, steps, out_dir, seed, eval_every, eval_episodes, eval_mode,
                               time_limit_min, continuous, make_env, checkpoint_dir, collectors, ray_address,
                               progress)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_dir = Path(checkpoint_dir or out_dir / 'checkpoint')
    torch.manual_seed(seed)
    env = make_env(task, seed=seed, continuous=continuous)
    env.action_space.seed(seed)
    agent = Agent.for_env(preset, env, seed)
    learner = Learner(agent)
    replay = Replay(min(preset.replay_capacity, steps + 1), env.observation_space['bev'].shape,
                    agent.world_model.ego_dim, agent.action_dim, seed)
    log = RunLog(out_dir)
    updates_per_step = preset.train_ratio / (preset.batch * preset.seq_len)
    started, deadline = time.time(), None if time_limit_min is None else time.time() + 60 * time_limit_min

    def save(step, metrics):
        extra = {'train_wall_s': round(time.time() - started, 1), 'seed': seed, 'updates': updates}
        save_checkpoint(checkpoint_dir, agent, task, step, metrics, replay, extra, contract=env.unwrapped.contract())

    obs, info = env.reset(seed=seed)
    replay.add(obs, np.zeros(agent.action_dim), 0.0, True, False)
    state, ret, length, episodes, updates, owed = None, 0.0, 0, 0, 0, 0.0
    eval_metrics, recent = {}, []
    bar = tqdm(total=steps, disable=not progress, unit='step', smoothing=0.05)
    for step in range(1, steps + 1):
        if step <= preset.prefill:
            action = env.action_space.sample()
        else:
            action, state, _ = agent.act(obs, state, 'sample')
        obs, reward, terminated, truncated, info = env.step(action)
        replay.add(obs, agent.encode_action(action).numpy(), reward, False, terminated)
        ret, length = ret + reward, length + 1
        if terminated or truncated:
            episodes += 1
            recent = (recent + [float(info['success'])])[-20:]
            log.scalars(step, {'return': ret, 'length': length, 'success': float(info['success']),
                             'collision': float(info['collision'])}, 'episode/')
            obs, info = env.reset()
            replay.add(obs, np.zeros(agent.action_dim), 0.0, True, False)
            state, ret, length = None, 0.0, 0

        if step >= preset.prefill and len(replay) >= preset.seq_len:
            owed += updates_per_step
            while owed >= 1:
                metrics = learner.update(replay.sample(preset.batch, preset.seq_len))
                owed, updates = owed - 1, updates + 1
                if updates % 50 == 0:
                    log.scalars(step, metrics, 'train/')
        bar.update(1)
        if episodes:
            bar.set_postfix(episodes=episodes, updates=updates, success20=f'{np.mean(recent):.2f}', refresh=False)

        out_of_time = deadline is not None and time.time() > deadline
        if step % eval_every == 0 or step == steps or out_of_time:
            eval_metrics = evaluate(agent, task, eval_episodes, eval_mode, make_env, continuous)
            log.scalars(step, eval_metrics, f'eval_{eval_mode}/')
            log.image(step, 'bev/real_over_decoded', bev_comparison(agent.world_model, replay, min(8, preset.seq_len)))
            save(step, {f'eval_{eval_mode}': eval_metrics, 'eval_episodes': eval_episodes})
            bar.write(f'step {step}: eval ({eval_mode}, {eval_episodes} episodes) '
                      + ', '.join(f'{k} {v:.3g}' for k, v in eval_metrics.items()))
        if out_of_time:
            bar.write(f'time limit of {time_limit_min} min reached at step {step}')
            break
    bar.close()
    env.close()
    log.close()
    return agent, eval_metrics


def save_untrained(directory, preset_name: str, scripted_steps: int):
    """An untrained agent of the preset for the default task, with the replay summary of `scripted_steps`
    steps cycling through the actions: for tests and benchmarks of the plumbing (loading, latency,
    adapters), where what the network has learned does not matter."""
    torch.manual_seed(0)
    task = default_task()
    env = make_task_env(task, seed=0)
    agent = Agent.for_env(load_preset(preset_name), env)
    replay = Replay(2 * scripted_steps, env.observation_space['bev'].shape, agent.world_model.ego_dim,
                    agent.action_dim)
    obs, _ = env.reset(seed=0)
    replay.add(obs, np.zeros(agent.action_dim), 0.0, True, False)
    for step in range(scripted_steps):
        action = step % agent.action_dim
        obs, reward, terminated, truncated, _ = env.step(action)
        replay.add(obs, agent.encode_action(action).numpy(), reward, False, terminated)
        if terminated or truncated:
            obs, _ = env.reset()
            replay.add(obs, np.zeros(agent.action_dim), 0.0, True, False)
    return save_checkpoint(directory, agent, task, 0, {}, replay, contract=env.unwrapped.contract())
