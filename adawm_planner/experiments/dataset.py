"""Training from recorded drives (no ROS here: `adawm dataset` in adawm_planner/dataset.py turns bags into
the files this module reads).

A dataset is a folder with `dataset.json` (format, the contract its steps were made under, the source bags,
what was skipped and why, the action mapping's error, shard list with sha256) and `shard-NNNNN.safetensors`
files of model steps in recording order, with the replay's time convention: the observation, the action
index that led to it (-1 at a segment's first step), the reward received on arriving, `is_first`,
`is_terminal`, `success` (1 at the terminal step of an episode that arrived; a dataset written before it
was kept has none, and offline AdaWM then sees no episode outcomes); plus stamp, episode and the recorded
control for inspection.

`pretrain_from_dataset`: world model and actor-critic (in imagination) by the same Learner updates as online
pretraining, sampled from the training part; the last `holdout` fraction of the steps (a later stretch of
driving, never trained on) is held out and its losses logged. `finetune_from_dataset`: offline AdaWM — the
dataset replayed in recording order as if driven, one Finetuner step (measure ε_P / ε_π on the newest
window, update the chosen side with LoRA) every `train_every` steps, trace and adapters written as
`adawm finetune` writes them.
"""
from __future__ import annotations

import collections
import csv
import dataclasses
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file as load_arrays
from safetensors.numpy import save_file as save_arrays
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from adawm_planner.core.adaptation import FinetuneConfig, Finetuner
from adawm_planner.core.agent import Agent
from adawm_planner.core.bev import CHANNELS
from adawm_planner.core.checkpoint import load_checkpoint, load_state, save_checkpoint
from adawm_planner.core.contract import Contract
from adawm_planner.core.learner import Learner, load_optimizer_tensors, optimizer_tensors
from adawm_planner.core.replay import Replay
from adawm_planner.experiments.runlog import RunLog, bev_comparison

FORMAT = 'adawm-dataset/1'
MANIFEST = 'dataset.json'
ARRAYS = ('bev', 'ego', 'action', 'reward', 'is_first', 'is_terminal', 'success', 'stamp', 'episode', 'control')
OPTIONAL = ('success',)   # absent from datasets written before it was kept
HELDOUT_SEQUENCES = 32   # fixed held-out sequences the held-out losses are the mean over
BEHAVIOUR_CLONING = 1.0  # weight of the recorded actions' likelihood in the actor loss (Learner; measured at 1.0)
TRACE_FIELDS = ['finetune_step', 'dataset_step', 'eps_model', 'eps_policy', 'eps_policy_episodes', 'eps_policy_max',
                'visitation_tv', 'tv_prior_posterior', 'tv_policy', 'eps_policy_reward', 'decision']


class DatasetError(ValueError):
    """A dataset that cannot be used; the message says why."""


def sha256_file(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class ShardWriter:
    """Model steps -> shard files of `shard_steps` steps each, written as they fill (a long conversion that
    is stopped keeps its full shards)."""

    def __init__(self, out: Path, shard_steps: int = 1024):
        self.out, self.shard_steps = Path(out), shard_steps
        self.out.mkdir(parents=True, exist_ok=True)
        self.rows: dict[str, list] = {name: [] for name in ARRAYS}
        self.shards: list[dict] = []

    def add(self, **step) -> None:
        for name in ARRAYS:
            self.rows[name].append(step[name])
        if len(self.rows['bev']) >= self.shard_steps:
            self.flush()

    def flush(self) -> None:
        if not self.rows['bev']:
            return
        arrays = {'bev': np.stack(self.rows['bev']).astype(np.uint8),
                  'ego': np.stack(self.rows['ego']).astype(np.float32),
                  'action': np.array(self.rows['action'], np.int16),
                  'reward': np.array(self.rows['reward'], np.float32),
                  'is_first': np.array(self.rows['is_first'], np.uint8),
                  'is_terminal': np.array(self.rows['is_terminal'], np.uint8),
                  'success': np.array(self.rows['success'], np.uint8),
                  'stamp': np.array(self.rows['stamp'], np.float64),
                  'episode': np.array(self.rows['episode'], np.int32),
                  'control': np.array(self.rows['control'], np.float32).reshape(-1, 3)}
        path = self.out / f'shard-{len(self.shards):05d}.safetensors'
        save_arrays(arrays, str(path))
        self.shards.append({'file': path.name, 'steps': len(arrays['bev']), 'sha256': sha256_file(path)})
        self.rows = {name: [] for name in ARRAYS}


def read_manifest(directory) -> dict:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise DatasetError(f'{path} not found: a dataset is a folder written by `adawm dataset`')
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise DatasetError(f'{path} is not valid JSON: {exc}') from None
    if not isinstance(manifest, dict) or manifest.get('format') != FORMAT:
        raise DatasetError(f'{path}: format {manifest.get("format") if isinstance(manifest, dict) else None!r}, '
                           f'expected {FORMAT!r}')
    return manifest


def load_dataset(directory) -> tuple[dict, Contract, dict]:
    """(manifest, contract, arrays concatenated over shards); DatasetError if a shard is missing or changed."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    try:
        contract = Contract.from_dict(manifest['contract'])
    except (KeyError, ValueError) as exc:
        raise DatasetError(f'{directory / MANIFEST}: no usable contract ({exc})') from None
    parts = []
    for shard in manifest.get('shards', []):
        path = directory / shard['file']
        if not path.is_file() or sha256_file(path) != shard['sha256']:
            raise DatasetError(f'{path}: missing or its sha256 does not match {MANIFEST}')
        parts.append(load_arrays(str(path)))
    if not parts:
        raise DatasetError(f'{directory} holds no steps (see "sources" in {MANIFEST} for why)')
    missing = [name for name in ARRAYS if any(name not in p for p in parts)]
    if set(missing) - set(OPTIONAL):
        raise DatasetError(f'{directory}: shards without {", ".join(sorted(set(missing) - set(OPTIONAL)))}')
    return manifest, contract, {name: np.concatenate([p[name] for p in parts]) for name in ARRAYS
                                if name not in missing}


def to_replay(arrays: dict, action_dim: int, start: int = 0, stop: int | None = None, seed: int = 0) -> Replay:
    """Steps [start, stop) as a full Replay (one-hot actions; the first step starts a segment)."""
    stop = len(arrays['bev']) if stop is None else stop
    n = stop - start
    replay = Replay(n, arrays['bev'].shape[1:], arrays['ego'].shape[1], action_dim, seed)
    action = arrays['action'][start:stop].astype(np.int64)
    replay.bev[:], replay.ego[:] = arrays['bev'][start:stop], arrays['ego'][start:stop]
    replay.action[:] = np.where(action[:, None] >= 0, np.eye(action_dim, dtype=np.float32)[np.maximum(action, 0)], 0)
    replay.reward[:] = arrays['reward'][start:stop]
    replay.is_first[:], replay.is_terminal[:] = arrays['is_first'][start:stop], arrays['is_terminal'][start:stop]
    replay.is_first[0] = True
    replay.size, replay.next = n, 0
    return replay


def split(arrays: dict, action_dim: int, holdout: float, seq_len: int, seed: int = 0) -> tuple[Replay, Replay]:
    """(training, held-out) replays: the held-out part is the last `holdout` fraction of the steps."""
    n = len(arrays['bev'])
    cut = n - int(round(holdout * n))
    if cut < seq_len or n - cut < seq_len:
        raise DatasetError(f'{n} steps cannot be split into training and held-out parts of at least one '
                           f'sequence ({seq_len} steps) each at holdout {holdout}')
    return to_replay(arrays, action_dim, 0, cut, seed), to_replay(arrays, action_dim, cut, n, seed)


def agent_for(contract: Contract, preset, seed: int = 0) -> Agent:
    bev_shape = (contract.bev.size, contract.bev.size, len(CHANNELS))
    return Agent(preset, bev_shape, len(contract.ego_features), len(contract.action_table()), True, seed)


@torch.no_grad()
def heldout_metrics(world_model, replay: Replay, sequences: int = HELDOUT_SEQUENCES) -> dict:
    """The world-model losses on fixed held-out sequences, and its one-step prediction errors there: the
    BEV and ego vector decoded from the prior (the step predicted from the previous latent and the recorded
    action, before seeing the observation) against what was recorded, summed squared error per step."""
    length = world_model.preset.seq_len
    index = replay.sample_indices(sequences, length, np.random.default_rng(0))
    batch = replay.gather(index)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        _, metrics, _ = world_model.loss_and_posts(batch)
        _, priors = world_model.observe(batch['bev'], batch['ego'], batch['action'], batch['is_first'])
    feat = world_model.feat(priors)
    predicted = ~batch['is_first']   # at a segment's first step the prior knows nothing of it
    bev_error = (world_model.bev_decoder(feat) - batch['bev'].float() / 255.0).square().sum((-3, -2, -1))
    ego_error = (world_model.decode_ego(feat) - batch['ego']).square().sum(-1)
    return {**metrics, 'bev_prediction_error': bev_error[predicted].mean().item(),
            'ego_prediction_error': ego_error[predicted].mean().item()}


def _optimizers(learner: Learner) -> dict:
    return {name: getattr(learner, name) for name in ('model_opt', 'actor_opt', 'critic_opt')}


def pretrain_from_dataset(dataset, preset, updates: int, out_dir, seed: int = 0, holdout: float = 0.1,
                          eval_every: int = 500, progress: bool = True, checkpoint_dir=None,
                          behaviour_cloning: float = BEHAVIOUR_CLONING):
    """`updates` Learner updates on the dataset's training part. Every `eval_every` updates and at the end:
    held-out losses into scalars.csv / TensorBoard (prefix heldout/) and a checkpoint (with the dataset's
    contract) to `checkpoint_dir` (default out_dir/checkpoint), with the optimisers' state in
    out_dir/training_state.safetensors: run again with the same out_dir to resume where it stopped.
    Returns (agent, the last held-out metrics, the untrained model's held-out metrics)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_dir = Path(checkpoint_dir or out_dir / 'checkpoint')
    manifest, contract, arrays = load_dataset(dataset)
    torch.manual_seed(seed)
    agent = agent_for(contract, preset, seed)
    train, heldout = split(arrays, len(contract.action_table()), holdout, preset.seq_len, seed)
    learner = Learner(agent, behaviour_cloning)
    state_file, state_meta = out_dir / 'training_state.safetensors', out_dir / 'training_state.json'
    done, untrained = 0, None
    if state_meta.is_file() and state_file.is_file():   # resume: weights, optimisers, counters
        resumed = json.loads(state_meta.read_text())
        resumed_agent, _ = load_checkpoint(checkpoint_dir, preset.name)
        load_state(agent, resumed_agent.state_dict())
        load_optimizer_tensors(_optimizers(learner), load_file(str(state_file)))
        done, untrained = resumed['updates'], resumed['untrained_heldout']
        train.rng = np.random.default_rng([seed, done])
    else:
        untrained = heldout_metrics(agent.world_model, heldout)
    log = RunLog(out_dir)
    if done == 0:
        log.scalars(0, untrained, 'heldout/')
    started = time.time()
    metrics = untrained if done == 0 else heldout_metrics(agent.world_model, heldout)
    task = manifest.get('task') or 'dataset'
    bar = tqdm(total=updates, initial=done, disable=not progress, unit='update', smoothing=0.05)
    for update in range(done + 1, updates + 1):
        train_metrics = learner.update(train.sample(preset.batch, preset.seq_len))
        if update % 50 == 0:
            log.scalars(update, train_metrics, 'train/')
        bar.update(1)
        if update % eval_every == 0 or update == updates:
            metrics = heldout_metrics(agent.world_model, heldout)
            log.scalars(update, metrics, 'heldout/')
            log.image(update, 'bev/real_over_decoded', bev_comparison(agent.world_model, heldout,
                                                                      min(8, preset.seq_len)))
            extra = {'train_wall_s': round(time.time() - started, 1), 'seed': seed, 'updates': update,
                     'dataset': {'path': str(dataset), 'steps': len(arrays['bev']), 'train_steps': len(train),
                                 'heldout_steps': len(heldout)}}
            save_checkpoint(checkpoint_dir, agent, task, update, {'heldout': metrics}, train, extra,
                            contract=contract)
            save_file(optimizer_tensors(_optimizers(learner)), str(state_file))
            state_meta.write_text(json.dumps({'updates': update, 'untrained_heldout': untrained}, indent=2) + '\n')
            bar.set_postfix(heldout_bev=f'{metrics["bev_prediction_error"]:.1f}', refresh=False)
    bar.close()
    log.close()
    return agent, metrics, untrained


def finetune_from_dataset(checkpoint_dir, dataset, out_dir, seed: int = 0, config: FinetuneConfig = FinetuneConfig(),
                          progress: bool = True, save_every: int = 25) -> dict:
    """Offline AdaWM on a dataset (see the module's docstring); returns the run's result (result.json).
    A folder that already holds result.json is a finished run and is returned as it is. Every `save_every`
    finetuning steps the Finetuner's state (weights with adapters, optimisers, generator) goes to
    out_dir/finetune_state.safetensors with the dataset position in finetune_state.json: run again with the
    same out_dir to resume there (the trace keeps its rows up to that step)."""
    out_dir = Path(out_dir)
    if (out_dir / 'result.json').is_file():
        return json.loads((out_dir / 'result.json').read_text())
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest, contract, arrays = load_dataset(dataset)
    torch.manual_seed(seed)
    agent, meta = load_checkpoint(checkpoint_dir, seed=seed)
    if meta['contract'] != contract:
        raise DatasetError(f'the dataset was made under another contract than {checkpoint_dir}\'s (step period, '
                           'actions, BEV): convert the recordings again with --checkpoint ' + str(checkpoint_dir))
    tuner = Finetuner.from_checkpoint(agent, config, checkpoint_dir)
    p = agent.preset
    data = to_replay(arrays, agent.action_dim)
    replay = Replay(len(data), data.bev.shape[1:], agent.world_model.ego_dim, agent.action_dim, seed)
    tuner.attach(replay)
    started, decisions, position = time.time(), {'model': 0, 'policy': 0, 'both': 0, 'none': 0}, 0
    state_file, state_meta, trace_path = (out_dir / 'finetune_state.safetensors', out_dir / 'finetune_state.json',
                                          out_dir / 'trace.csv')
    rows = []
    if state_meta.is_file() and state_file.is_file() and trace_path.is_file():   # resume
        saved = json.loads(state_meta.read_text())
        tuner.load_state_tensors(load_file(str(state_file)))
        position, decisions = saved['dataset_step'], saved['decisions']
        with open(trace_path) as f:
            rows = [r for r in csv.DictReader(f) if int(r['finetune_step']) <= tuner.steps]
        replay.rng = np.random.default_rng([seed, tuner.steps])
    log = RunLog(out_dir)

    failures = collections.deque(maxlen=config.outcome_window)   # of the latest episodes that ended

    def add(i):
        replay.add({'bev': data.bev[i], 'ego': data.ego[i]}, data.action[i], data.reward[i], data.is_first[i],
                   data.is_terminal[i])
        if data.is_terminal[i] and 'success' in arrays:
            failures.append(0.0 if arrays['success'][i] else 1.0)
    for i in range(position):   # the replay as it stood at the saved step; its training is in the state
        add(i)
    with open(trace_path, 'w', newline='') as trace_file:
        trace = csv.DictWriter(trace_file, TRACE_FIELDS)
        trace.writeheader()
        trace.writerows(rows)
        for i in tqdm(range(position, len(data)), initial=position, total=len(data), disable=not progress,
                      unit='step', desc=f'{config.strategy} on {dataset}'):
            add(i)
            if (i + 1) % config.train_every == 0 and len(replay) >= max(config.window, p.seq_len):
                out = tuner.step(replay.sample(p.batch, p.seq_len),
                                 {**replay.newest(config.window), 'failures': np.array(failures, np.float64)})
                decisions[out['decision']] += 1
                trace.writerow({'finetune_step': tuner.steps, 'dataset_step': i + 1,
                                **{k: out.get(k, '') for k in TRACE_FIELDS[2:]}})
                log.scalars(i + 1, {k: out[k] for k in TRACE_FIELDS[2:] if isinstance(out.get(k), float)},
                            'mismatch/')
                if tuner.steps % save_every == 0:
                    trace_file.flush()
                    save_file(tuner.state_tensors(), str(state_file))
                    state_meta.write_text(json.dumps({'dataset_step': i + 1, 'finetune_step': tuner.steps,
                                                      'decisions': decisions}) + '\n')
    log.close()
    adapters = tuner.save_adapters(out_dir)
    result = {'checkpoint': str(checkpoint_dir), 'pretrain_task': meta.get('task'), 'dataset': str(dataset),
              'dataset_steps': len(data), 'strategy': config.strategy, 'seed': seed,
              'finetune_steps': tuner.steps, 'decisions': decisions, 'config': dataclasses.asdict(config),
              'trainable': tuner.trainable_report(), 'adapters': adapters, 'resumed_at_step': position,
              'wall_s': round(time.time() - started, 1)}
    (out_dir / 'result.json').write_text(json.dumps(result, indent=2) + '\n')
    return result
