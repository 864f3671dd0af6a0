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


@torch.no_grad()
def episode_scores(agent, episode: dict, horizon: int, seed: int = 0) -> dict:
    """Per-step 'model' and 'reward' scores (core.mismatch.model_scores, reward_scores) of one episode."""
    batch = {k: torch.as_tensor(v)[None] for k, v in episode.items() if k != 'failed'}
    generator = torch.Generator().manual_seed(seed)
    posts, _ = agent.world_model.observe(batch['bev'], batch['ego'], batch['action'], batch['is_first'],
                                         generator=generator)
    return {'model': mismatch.model_scores(agent.world_model, posts, batch['action'], batch['is_first'], horizon,
                                           generator),
            'reward': mismatch.reward_scores(batch['reward'], batch['is_first'])}


def build(agent, task: str, episodes: int, horizon: int = HORIZON, seed: int = REFERENCE_SEED,
          make_env=None) -> mismatch.Reference:
    """Scores of `episodes` pretraining-task episodes: even episodes form the CDF, odd ones the null. And
    the episodes' outcomes in the two modes an agent drives new-task data in: the actor's (the planner
    node's default; these episodes) and sampled actions (the finetuning runs'; `episodes` more, seeds
    seed + SAMPLE_SEED_OFFSET + i)."""
    halves = {'cdf': {'model': [], 'reward': []}, 'null': {'model': [], 'reward': []}}
    actor_episodes = collect(agent, task, episodes, seed, make_env=make_env)
    for i, episode in enumerate(actor_episodes):
        scores = episode_scores(agent, episode, horizon, seed + i)
        for signal, values in scores.items():
            halves['cdf' if i % 2 == 0 else 'null'][signal].append(values)
    sampled = collect(agent, task, episodes, seed + SAMPLE_SEED_OFFSET, mode='sample', make_env=make_env)
    failures = {'actor': [e['failed'] for e in actor_episodes], 'sample': [e['failed'] for e in sampled]}
    join = lambda d: {k: np.concatenate(v) for k, v in d.items()}
    meta = {'task': task, 'episodes': episodes, 'seed': seed, 'mode': 'actor'}
    return mismatch.Reference(horizon, join(halves['cdf']), join(halves['null']), meta, failures)


def write(checkpoint_dir, episodes: int = 80, horizon: int = HORIZON, make_env=None) -> Path:
    """Build the reference on the checkpoint's own task and record it in model.json."""
    checkpoint_dir = Path(checkpoint_dir)
    agent, meta = load_checkpoint(checkpoint_dir)
    reference = build(agent, meta['task'], episodes, horizon, make_env=make_env)
    path = checkpoint_dir / mismatch.REFERENCE_FILE
    reference.save(path)
    meta = read_meta(checkpoint_dir)
    meta['mismatch_reference'] = {'file': path.name, 'sha256': sha256_file(path), **reference.meta,
                                  'horizon': horizon}
    (checkpoint_dir / 'model.json').write_text(json.dumps(meta, indent=2) + '\n')
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('checkpoint')
    parser.add_argument('--episodes', type=int, default=80)
    parser.add_argument('--horizon', type=int, default=HORIZON)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(write(args.checkpoint, args.episodes, args.horizon))


if __name__ == '__main__':
    main()
