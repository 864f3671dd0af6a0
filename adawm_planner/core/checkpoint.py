"""Checkpoints: a directory with `model.safetensors` (every tensor of the Agent), `model.json` (preset,
observation/action spec, the contract — step period, action table, reward settings, BEV geometry — task,
step, metrics, sha256 of the weights file) and `replay.safetensors`, the summary of the pretraining replay
the adaptation step compares new-task data against. Never pickle.

Loading checks the sha256, then builds the Agent from the sidecar's preset and refuses any tensor whose
name or shape differs, with a message that says which.
"""
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from adawm_planner import __version__
from adawm_planner.core.agent import Agent
from adawm_planner.core.contract import Contract
from adawm_planner.core.presets import preset_from_dict

FORMAT = 'adawm-checkpoint/1'


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says why."""


def sha256_file(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def save_checkpoint(directory, agent, task, step, metrics, replay=None, extra=None, *, contract: Contract):
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / 'model.safetensors'
    tensors = {k: v.detach().contiguous().clone() for k, v in agent.state_dict().items()}
    save_file(tensors, str(weights))
    meta = {'format': FORMAT, 'version': __version__, 'preset': agent.preset.to_dict(), 'spec': agent.spec(),
            'contract': contract.to_dict(), 'task': task, 'step': int(step), 'metrics': metrics, 'sha256': sha256_file(weights),
            'saved_at': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()), **(extra or {})}
    if replay is not None:
        save_file(replay_summary(agent, replay), str(directory / 'replay.safetensors'))
        meta['replay_sha256'] = sha256_file(directory / 'replay.safetensors')
    (directory / 'model.json').write_text(json.dumps(meta, indent=2) + '\n')
    return directory


def read_meta(directory):
    path = Path(directory) / 'model.json'
    if not path.is_file():
        raise CheckpointError(f'{path} not found: a checkpoint is a directory with model.json + model.safetensors')
    try:
        meta = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f'{path} is not valid JSON: {exc}') from None
    if not isinstance(meta, dict) or meta.get('format') != FORMAT:
        format_ = meta.get('format') if isinstance(meta, dict) else None
        raise CheckpointError(f'{path}: format {format_!r}, expected {FORMAT!r}')
    return meta


def read_contract(meta: dict) -> Contract:
    """The contract a checkpoint's model.json carries; CheckpointError when it has none or a bad one."""
    if 'contract' not in meta:
        raise CheckpointError('model.json has no "contract" (step period, actions, reward, BEV geometry): '
                              'save the checkpoint again with this version')
    try:
        return Contract.from_dict(meta['contract'])
    except ValueError as exc:
        raise CheckpointError(f'model.json: {exc}') from None


def check_files(directory) -> dict:
    """model.json readable, its contract usable, the weights file there and matching its sha256: the meta
    with meta['contract'] the Contract, else CheckpointError. What loading checks before building a model."""
    directory = Path(directory)
    meta = read_meta(directory)
    contract = read_contract(meta)
    weights = directory / 'model.safetensors'
    if not weights.is_file():
        raise CheckpointError(f'{weights} not found')
    digest = sha256_file(weights)
    if digest != meta.get('sha256'):
        raise CheckpointError(f'{weights}: sha256 {digest} does not match {meta.get("sha256")} in model.json '
                              '(file changed or corrupt)')
    return {**meta, 'contract': contract}


def load_checkpoint(directory, preset_name=None, seed=0):
    """Returns (agent, meta); meta['contract'] is the Contract. `preset_name`, when given, must match."""
    directory = Path(directory)
    meta = check_files(directory)
    weights = directory / 'model.safetensors'
    try:
        preset = preset_from_dict(meta['preset'])
        spec = meta['spec']
        agent = Agent(preset, spec['bev_shape'], spec['ego_dim'], spec['action_dim'], spec['discrete'], seed)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f'{directory}/model.json: preset or spec incomplete or malformed ({exc!r})') from None
    if preset_name is not None and preset.name != preset_name:
        raise CheckpointError(f'{directory} holds preset {preset.name!r}, not the requested {preset_name!r}')
    load_state(agent, load_file(str(weights)), source=str(weights))
    return agent, meta


def load_state(agent, tensors, source='checkpoint'):
    """Copy `tensors` into `agent`, refusing missing, unexpected or wrongly shaped ones."""
    expected = agent.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [f'{k}: {tuple(tensors[k].shape)} in file, model needs {tuple(v.shape)}'
             for k, v in expected.items() if k in tensors and tensors[k].shape != v.shape]
    if missing or unexpected or wrong:
        lines = ([f'missing {k}' for k in missing[:5]] + [f'unexpected {k}' for k in unexpected[:5]]
                 + wrong[:5])
        raise CheckpointError(f'{source} does not fit this model ({len(missing)} missing, '
                              f'{len(unexpected)} unexpected, {len(wrong)} wrong shapes):\n  '
                              + '\n  '.join(lines))
    agent.load_state_dict(tensors)


@torch.inference_mode()
def replay_summary(agent, replay, sequences=256, raw_sequences=8, seed=0):
    """Compact summary of a replay buffer: for `sequences` random sequences the posterior latent codes
    (most likely class per factor), actions, rewards and ego vectors; for the first `raw_sequences` of them
    also the raw BEV frames, so the adaptation step can re-filter real pretraining observations."""
    p = agent.preset
    index = replay.sample_indices(sequences, p.seq_len, np.random.default_rng(seed))
    codes = []
    for chunk in range(0, sequences, 32):
        batch = replay.gather(index[chunk:chunk + 32])
        posts, _ = agent.world_model.observe(batch['bev'], batch['ego'], batch['action'], batch['is_first'])
        codes.append(posts['logits'].argmax(-1).to(torch.uint8))
    batch = replay.gather(index)
    return {'codes': torch.cat(codes), 'action': batch['action'].argmax(-1).to(torch.int16)
            if agent.discrete else batch['action'], 'reward': batch['reward'], 'ego': batch['ego'],
            'is_first': batch['is_first'], 'is_terminal': batch['is_terminal'],
            'raw_bev': batch['bev'][:raw_sequences].contiguous(),
            'raw_action': batch['action'][:raw_sequences].contiguous()}


def load_replay_summary(directory):
    directory = Path(directory)
    meta = read_meta(directory)
    path = directory / 'replay.safetensors'
    if not path.is_file():
        raise CheckpointError(f'{path} not found')
    if sha256_file(path) != meta.get('replay_sha256'):
        raise CheckpointError(f'{path}: sha256 does not match model.json')
    return load_file(str(path))
