"""Scaling out on Ray: the strategy grid as Ray tasks, and pretraining with simulator collectors as Ray
actors. Only the `--workers` / `--collectors` paths import this module, so without them Ray is neither
started nor imported.

Nothing here assumes a shared filesystem: a grid run gets the checkpoint's files through the object store
and sends its run folder back as bytes, which the driver writes into the usual layout (result.json last,
so a folder with result.json is still a finished run). A cluster's workers need this package and the
pinned requirements installed, with the same Python.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from adawm_planner.core.agent import Agent
from adawm_planner.core.checkpoint import save_checkpoint
from adawm_planner.core.learner import Learner
from adawm_planner.core.replay import Replay
from adawm_planner.experiments.runlog import RunLog, bev_comparison

BROADCAST_EVERY = 8   # learner updates between two weight broadcasts to the collectors
CHUNK = 16            # env steps a collector takes per call (the learner trains as each chunk arrives)


def init_ray(address=None, num_cpus=None):
    """Connects to the Ray cluster at `address`, or starts a local one that listens on loopback only."""
    if address is None:
        # On Linux Ray swaps 127.0.0.1 for the machine's public address unless "clusters" are off; a local
        # instance needs no other host, so every socket stays on loopback.
        os.environ.setdefault('RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER', '0')
    import ray
    if not ray.is_initialized():
        if address is None:   # 'local': a new instance, even where `ray start` left a cluster's address
            ray.init(address='local', num_cpus=num_cpus, include_dashboard=False, _node_ip_address='127.0.0.1',
                     log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    return ray


class GridError(RuntimeError):
    """Runs of a grid that failed twice; every other run finished and was saved."""


def run_grid(checkpoint_dir, finetune_task, jobs, out_dir, workers, ray_address=None, **run_kwargs):
    """Runs `jobs` [(strategy, seed, config)] as Ray tasks (finetune() with `run_kwargs`), at most `workers`
    at a time, one CPU each; each finished run's folder is written to out_dir/STRATEGY/seedN as soon as it
    comes back, its result.json naming `checkpoint_dir` as a serial run's does. A run whose task
    fails or whose worker dies is retried once. Returns {(strategy, seed): result} and the retried runs
    [(strategy, seed, reason)]; raises GridError (after the other runs finished) if a retry fails too."""
    ray = init_ray(ray_address, workers)
    files = {p.name: p.read_bytes() for p in Path(checkpoint_dir).iterdir() if p.is_file()}
    checkpoint = ray.put(files)
    remote_run = ray.remote(num_cpus=1, max_retries=0)(_grid_run)
    pending, running, done, retried, failed = list(jobs), {}, {}, [], []
    attempts = {}
    while pending or running:
        while pending and len(running) < workers:
            strategy, seed, config = job = pending.pop(0)
            attempts[strategy, seed] = attempts.get((strategy, seed), 0) + 1
            running[remote_run.remote(checkpoint, finetune_task, seed, config, run_kwargs)] = job
        [ref], _ = ray.wait(list(running), num_returns=1)
        strategy, seed, config = job = running.pop(ref)
        try:
            result, folder = ray.get(ref)
        except ray.exceptions.RayError as exc:   # the run raised, or its worker or node died
            reason = type(exc).__name__ + ''.join(f': {line}' for line in str(exc).strip().splitlines()[-1:])
            if attempts[strategy, seed] == 1:
                retried.append((strategy, seed, reason))
                print(f'{strategy}/seed{seed}: {reason}; retrying once', file=sys.stderr, flush=True)
                pending.append(job)
            else:
                failed.append((strategy, seed, reason))
                print(f'{strategy}/seed{seed}: failed again: {reason}', file=sys.stderr, flush=True)
            continue
        result['checkpoint'] = str(checkpoint_dir)   # not the worker's temporary copy
        folder['result.json'] = (json.dumps(result, indent=2) + '\n').encode()
        _write_folder(Path(out_dir) / strategy / f'seed{seed}', folder)
        done[strategy, seed] = result
        print(f'{strategy}/seed{seed}: success {result["before"]["success"]:.2f} -> '
              f'{result["after"]["success"]:.2f} ({result["wall_s"]:.0f} s)', flush=True)
    if failed:
        raise GridError('runs failed twice: ' + '; '.join(f'{s}/seed{n} ({why})' for s, n, why in failed))
    return done, retried


def _grid_run(checkpoint_files, task, seed, config, run_kwargs):
    """One finetuning run inside a Ray worker: the checkpoint and the run folder live in a temp dir here."""
    from adawm_planner.experiments.finetune import finetune
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix='adawm-run-') as tmp:
        checkpoint, run = Path(tmp) / 'checkpoint', Path(tmp) / 'run'
        checkpoint.mkdir()
        for name, blob in checkpoint_files.items():
            (checkpoint / name).write_bytes(blob)
        result = finetune(checkpoint, task, out_dir=run, seed=seed, config=config, progress=False, **run_kwargs)
        folder = {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob('*')) if p.is_file()}
    return result, folder


def _write_folder(run_dir: Path, folder: dict):
    """The run's files, result.json last: only a complete folder counts as a finished run."""
    for name in sorted(folder, key=lambda n: n == 'result.json'):
        path = run_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + '.part')
        partial.write_bytes(folder[name])
        partial.replace(path)


class ShardedReplay:
    """One Replay per collector, so that a sampled sequence never splices two simulators' steps; a batch
    draws each sequence from a shard chosen with probability proportional to its size."""

    def __init__(self, shards, capacity, bev_shape, ego_dim, action_dim, seed=0):
        self.shards = [Replay(capacity, bev_shape, ego_dim, action_dim, seed + i) for i in range(shards)]
        self.rng = np.random.default_rng(seed)

    def __len__(self):
        return sum(len(s) for s in self.shards)

    def add_chunk(self, shard, chunk):
        replay = self.shards[shard]
        for i in range(len(chunk['reward'])):
            replay.add({'bev': chunk['bev'][i], 'ego': chunk['ego'][i]}, chunk['action'][i], chunk['reward'][i],
                       chunk['is_first'][i], chunk['is_terminal'][i])

    def ready(self, length):
        return any(len(s) >= length for s in self.shards)

    def sample(self, batch, length):
        sizes = np.array([len(s) if len(s) >= length else 0 for s in self.shards], float)
        counts = np.bincount(self.rng.choice(len(self.shards), batch, p=sizes / sizes.sum()),
                             minlength=len(self.shards))
        parts = [s.sample(int(n), length) for s, n in zip(self.shards, counts) if n]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


class Collector:
    """A simulator and a copy of the agent in a Ray actor: steps its own env with the newest weights it was
    sent and returns the steps as replay rows (the env's reset observation included, as in pretrain())."""

    def __init__(self, task, preset, seed, continuous, make_env):
        torch.set_num_threads(1)
        torch.manual_seed(seed)
        self.env = make_env(task, seed=seed, continuous=continuous)
        self.env.action_space.seed(seed)
        self.agent = Agent.for_env(preset, self.env, seed)
        self.obs = None   # the first call resets the env
        self.seed = seed

    def collect(self, steps, weights, explore_randomly):
        """`steps` env steps; `weights` (numpy state dict) replaces the agent's when not None. Returns the
        rows as arrays and the episodes that ended ({return, length, success, collision})."""
        if weights is not None:
            self.agent.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
        rows, episodes = [], []
        if self.obs is None:
            self.obs, _ = self.env.reset(seed=self.seed)
            self.state, self.ret, self.length = None, 0.0, 0
            rows.append((self.obs, np.zeros(self.agent.action_dim, np.float32), 0.0, True, False))
        for _ in range(steps):
            if explore_randomly:
                action = self.env.action_space.sample()
            else:
                action, self.state, _ = self.agent.act(self.obs, self.state, 'sample')
            self.obs, reward, terminated, truncated, info = self.env.step(action)
            rows.append((self.obs, self.agent.encode_action(action).numpy(), reward, False, terminated))
            self.ret, self.length = self.ret + reward, self.length + 1
            if terminated or truncated:
                episodes.append({'return': self.ret, 'length': self.length, 'success': float(info['success']),
                                 'collision': float(info['collision'])})
                self.obs, _ = self.env.reset()
                self.state, self.ret, self.length = None, 0.0, 0
                rows.append((self.obs, np.zeros(self.agent.action_dim, np.float32), 0.0, True, False))
        chunk = {'bev': np.stack([r[0]['bev'] for r in rows]), 'ego': np.stack([r[0]['ego'] for r in rows]),
                 'action': np.stack([r[1] for r in rows]).astype(np.float32),
                 'reward': np.array([r[2] for r in rows], np.float32),
                 'is_first': np.array([r[3] for r in rows]), 'is_terminal': np.array([r[4] for r in rows])}
        return chunk, episodes


def pretrain_on_ray(task, preset, steps, out_dir, seed, eval_every, eval_episodes, eval_mode, time_limit_min,
                    continuous, make_env, checkpoint_dir, collectors, ray_address=None, progress=True):
    """pretrain() with `collectors` Ray actors stepping the simulator while this process (the learner)
    trains at the preset's train ratio on what they send: after each chunk of n env steps it owes
    n * train_ratio / (batch * seq_len) updates and takes them; every BROADCAST_EVERY updates the weights go
    to the object store and each collector picks them up with its next call. The collectors run ahead of
    the learner by at most one chunk each. Writes what pretrain() writes, plus throughput/ scalars after the
    prefill: env steps/s, updates/s and learner_busy, the share of the time the learner did not wait for a
    chunk (near 1: learner-bound, more collectors cannot help). Returns (agent, last eval metrics)."""
    from adawm_planner.experiments.pretrain import evaluate
    ray = init_ray(ray_address, collectors)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_dir = Path(checkpoint_dir or out_dir / 'checkpoint')
    torch.manual_seed(seed)
    env = make_env(task, seed=seed, continuous=continuous)   # the learner's copy: spaces and contract
    agent = Agent.for_env(preset, env, seed)
    learner = Learner(agent)
    capacity = min(preset.replay_capacity, steps // collectors + CHUNK + 1)
    replay = ShardedReplay(collectors, capacity, env.observation_space['bev'].shape, agent.world_model.ego_dim,
                           agent.action_dim, seed)
    log = RunLog(out_dir)
    updates_per_step = preset.train_ratio / (preset.batch * preset.seq_len)
    started = time.time()
    deadline = None if time_limit_min is None else started + 60 * time_limit_min

    actor_class = ray.remote(num_cpus=1)(Collector)
    actors = [actor_class.remote(task, preset, seed + 1 + i, continuous, make_env) for i in range(collectors)]

    def weights():
        return ray.put({k: v.detach().cpu().numpy() for k, v in agent.state_dict().items()})

    current, version, sent = weights(), 1, [0] * collectors
    dispatched, step, updates, owed, episodes, recent, eval_metrics = 0, 0, 0, 0.0, 0, [], {}
    steady = None   # (time, step, updates) when the prefill ended: the throughput window starts there
    waited = 0.0    # seconds the learner spent waiting for a chunk, in that window
    running = {}

    def dispatch(i):
        nonlocal dispatched
        n = min(CHUNK, steps - dispatched)
        if n <= 0:
            return
        ref = actors[i].collect.remote(n, current if sent[i] < version else None, dispatched < preset.prefill)
        sent[i], dispatched = version, dispatched + n
        running[ref] = i

    def save():
        extra = {'train_wall_s': round(time.time() - started, 1), 'seed': seed, 'updates': updates,
                 'collectors': collectors}
        save_checkpoint(checkpoint_dir, agent, task, step, {f'eval_{eval_mode}': eval_metrics,
                                                             'eval_episodes': eval_episodes},
                        replay.shards[0], extra, contract=env.unwrapped.contract())

    for i in range(collectors):
        dispatch(i)
    try:
        while running:
            started_waiting = time.time()
            [ref], _ = ray.wait(list(running), num_returns=1)
            waited += time.time() - started_waiting
            i = running.pop(ref)
            chunk, ended = ray.get(ref)
            dispatch(i)   # the collector steps its next chunk while this one is learned from
            replay.add_chunk(i, chunk)
            before, step = step, step + int((~chunk['is_first']).sum())
            for episode in ended:
                episodes += 1
                recent = (recent + [episode['success']])[-20:]
                log.scalars(step, episode, 'episode/')
            if step >= preset.prefill and replay.ready(preset.seq_len):
                if steady is None:
                    steady, waited = (time.time(), step, updates), 0.0
                owed += (step - max(before, preset.prefill)) * updates_per_step
                while owed >= 1:
                    metrics = learner.update(replay.sample(preset.batch, preset.seq_len))
                    owed, updates = owed - 1, updates + 1
                    if updates % 50 == 0:
                        log.scalars(step, metrics, 'train/')
                    if updates % BROADCAST_EVERY == 0:
                        current, version = weights(), version + 1
            out_of_time = deadline is not None and time.time() > deadline
            finished = not running
            if step // eval_every > before // eval_every or finished or out_of_time:
                if steady is not None:
                    seconds = time.time() - steady[0]
                    log.scalars(step, {'env_steps_per_s': (step - steady[1]) / seconds,
                                       'updates_per_s': (updates - steady[2]) / seconds,
                                       'learner_busy': 1 - waited / seconds}, 'throughput/')
                eval_metrics = evaluate(agent, task, eval_episodes, eval_mode, make_env, continuous)
                log.scalars(step, eval_metrics, f'eval_{eval_mode}/')
                log.image(step, 'bev/real_over_decoded', bev_comparison(agent.world_model, replay,
                                                                        min(8, preset.seq_len)))
                save()
                if progress:
                    print(f'step {step}: {updates} updates, {episodes} episodes; eval ({eval_mode}, '
                          f'{eval_episodes} episodes) ' + ', '.join(f'{k} {v:.3g}' for k, v in eval_metrics.items()),
                          flush=True)
                if steady is not None:   # evaluation time is not collection time
                    steady, waited = (time.time(), step, updates), 0.0
            if out_of_time:
                print(f'time limit of {time_limit_min} min reached at step {step}', flush=True)
                break
    finally:
        for actor in actors:
            ray.kill(actor)
        env.close()
        log.close()
    return agent, eval_metrics

