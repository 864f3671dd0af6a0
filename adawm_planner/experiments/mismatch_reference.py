"""The mismatch reference shipped beside a checkpoint: per-step scores of the frozen pretrained agent on
held-out episodes of its own pretraining task (core/mismatch.py: Reference), so that ε_P and ε_π read ≈ 0
there and measure a new task's shift relative to it.

    python -m adawm_planner.experiments.mismatch_reference checkpoints/right_turn-moderate-small

writes CHECKPOINT/mismatch_reference.safetensors and its sha256 into model.json (`mismatch_reference`).
Episodes: actor mode, seeds REFERENCE_SEED + i (never used by training, evaluation or the benchmarks), and as
many with sampled actions for the failure rate of that mode (the episode-level ε_π).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from adawm_planner.core import mismatch
from adawm_planner.core.checkpoint import load_checkpoint, read_meta, sha256_file

REFERENCE_SEED = 20_000
SAMPLE_SEED_OFFSET = 5_000   # the sampled-action episodes' seeds (20000 + 5000 + i: still no other use's)
HORIZON = 15        # open-loop steps of the model score (chosen by AUROC, BENCHMARKS.md "Mismatch detection")


def collect(agent, task: str, episodes: int, seed: int, mode: str = 'actor', make_env=None,
            max_steps: int | None = None) -> list[dict]:
    """`episodes` episodes of `agent` on `task` (seeds seed + i): per episode the world model's inputs
    bev (T, S, S, C) uint8, ego (T, E), action (T, A) one-hot, reward (T,) (step t holds a_{t−1} and the
    reward received on arriving at o_t, as in the replay), is_first (T,), is_terminal (T,), and `failed`
    (the episode did not end in success: a collision, leaving the route or running out of time)."""
    if make_env is None:
        from adawm_planner.sim import make_env
    env = make_env(task, seed=seed)
    out, total = [], 0
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        state, done, prev, reward, terminated, info = None, False, torch.zeros(agent.action_dim), 0.0, False, {}
        steps = {'bev': [], 'ego': [], 'action': [], 'reward': []}
        while True:
            steps['bev'].append(obs['bev'])
            steps['ego'].append(obs['ego'])
            steps['action'].append(prev.numpy())
            steps['reward'].append(reward)
            if done:   # the last observation is kept: the reward of arriving there is in it
                break
            action, state, _ = agent.act(obs, state, mode)
            prev = agent.encode_action(action)
            obs, reward, terminated, truncated, info = env.step(action)
            done = terminated or truncated
        length = len(steps['bev'])
        out.append({'bev': np.stack(steps['bev']), 'ego': np.stack(steps['ego']).astype(np.float32),
                    'action': np.stack(steps['action']).astype(np.float32),
                    'reward': np.asarray(steps['reward'], np.float32),
                    'is_first': np.arange(length) == 0, 'is_terminal': (np.arange(length) == length - 1) & terminated,
                    'failed': not info.get('success', False)})
        total += length
        if max_steps is not None and total >= max_steps:
            break
    env.close()
    return out


SIGNALS = ('model', 'reward', 'improvement')


@torch.no_grad()
def episode_scores(agent, episode: dict, horizon: int, seed: int = 0, signals=SIGNALS) -> dict:
    """Per-step scores of one episode: 'model' and 'reward' (core.mismatch.model_scores, reward_scores) at
    every step, 'improvement' (improvement_scores) at every IMPROVEMENT_STRIDE-th, as a window samples it."""
    batch = {k: torch.as_tensor(v)[None] for k, v in episode.items() if k != 'failed'}
    generator = torch.Generator().manual_seed(seed)
    wm = agent.world_model
    posts, _ = wm.observe(batch['bev'], batch['ego'], batch['action'], batch['is_first'], generator=generator)
    scores = {}
    if 'model' in signals:
        scores['model'] = mismatch.model_scores(wm, posts, batch['action'], batch['is_first'], horizon, generator)
    if 'reward' in signals:
        scores['reward'] = mismatch.reward_scores(batch['reward'], batch['is_first'])
    if 'improvement' in signals:
        states = {k: posts[k][0, ::mismatch.IMPROVEMENT_STRIDE] for k in ('deter', 'stoch')}
        scores['improvement'] = mismatch.improvement_scores(wm, agent.actor_critic, states, agent.preset.horizon,
                                                            agent.preset.gamma, generator=generator)
    return scores


def build(agent, task: str, episodes: int, horizon: int = HORIZON, seed: int = REFERENCE_SEED,
          make_env=None, signals=SIGNALS, failures: bool = True) -> mismatch.Reference:
    """Scores of `episodes` pretraining-task episodes: even episodes form the CDF, odd ones the null. And
    (`failures`) the episodes' outcomes in the two modes an agent drives new-task data in: the actor's (the
    planner node's default; these episodes) and sampled actions (the finetuning runs'; `episodes` more, seeds
    seed + SAMPLE_SEED_OFFSET + i)."""
    halves = {'cdf': {s: [] for s in signals}, 'null': {s: [] for s in signals}}
    actor_episodes = collect(agent, task, episodes, seed, make_env=make_env)
    for i, episode in enumerate(actor_episodes):
        scores = episode_scores(agent, episode, horizon, seed + i, signals)
        for signal, values in scores.items():
            halves['cdf' if i % 2 == 0 else 'null'][signal].append(values)
    outcomes = {}
    if failures:
        sampled = collect(agent, task, episodes, seed + SAMPLE_SEED_OFFSET, mode='sample', make_env=make_env)
        outcomes = {'actor': [e['failed'] for e in actor_episodes], 'sample': [e['failed'] for e in sampled]}
    join = lambda d: {k: np.concatenate(v) for k, v in d.items()}
    meta = {'task': task, 'episodes': episodes, 'seed': seed, 'mode': 'actor'}
    return mismatch.Reference(horizon, join(halves['cdf']), join(halves['null']), meta, outcomes)


def write(checkpoint_dir, episodes: int = 80, horizon: int = HORIZON, make_env=None, extend: bool = False) -> Path:
    """Build the reference on the checkpoint's own task and record it in model.json. `extend`: keep the
    checkpoint's reference as it is and add the signals it lacks, scored on the same episode seeds (so the
    estimates of the signals it has, and every result measured with them, stay as they were)."""
    checkpoint_dir = Path(checkpoint_dir)
    agent, meta = load_checkpoint(checkpoint_dir)
    if extend:
        reference = mismatch.load_reference(checkpoint_dir)
        missing = [s for s in SIGNALS if s not in reference.cdf]
        if missing:
            added = build(agent, meta['task'], reference.meta['episodes'], reference.horizon,
                          seed=reference.meta['seed'], make_env=make_env, signals=missing, failures=False)
            reference.cdf.update(added.cdf)
            reference.null.update(added.null)
    else:
        reference = build(agent, meta['task'], episodes, horizon, make_env=make_env)
    path = checkpoint_dir / mismatch.REFERENCE_FILE
    reference.save(path)
    meta = read_meta(checkpoint_dir)
    meta['mismatch_reference'] = {'file': path.name, 'sha256': sha256_file(path), **reference.meta,
                                  'horizon': reference.horizon}
    (checkpoint_dir / 'model.json').write_text(json.dumps(meta, indent=2) + '\n')
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('checkpoint')
    parser.add_argument('--episodes', type=int, default=80)
    parser.add_argument('--horizon', type=int, default=HORIZON)
    parser.add_argument('--extend', action='store_true',
                        help='keep the existing reference and add the signals it lacks')
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(write(args.checkpoint, args.episodes, args.horizon, extend=args.extend))


if __name__ == '__main__':
    main()
