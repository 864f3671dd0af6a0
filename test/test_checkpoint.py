"""Checkpoints: safetensors + JSON sidecar, sha256, shape validation, replay summary."""
import json

import numpy as np
import pytest
import torch

from adawm_planner.core.agent import Agent
from adawm_planner.core.bev import BevSpec
from adawm_planner.core.contract import Contract
from adawm_planner.core.checkpoint import (CheckpointError, load_checkpoint, load_replay_summary,
                                           save_checkpoint)
from adawm_planner.core.presets import load_preset
from adawm_planner.core.replay import Replay
from toy_env import single_thread  # noqa: F401 (fixture)

BEV, EGO, ACTIONS = (64, 64, 5), 7, 15
CONTRACT = Contract(step_period=0.1, accelerations=(-2.0, 0.0, 2.0), steers=(-0.6, -0.2, 0.0, 0.2, 0.6),
                    v_des=5.0, bev=BevSpec(size=64), ego_features=tuple(f'e{i}' for i in range(EGO)))


def filled_replay(steps=80, seed=0):
    rng = np.random.default_rng(seed)
    replay = Replay(100, BEV, EGO, ACTIONS, seed)
    for t in range(steps):
        obs = {'bev': rng.integers(0, 256, BEV, dtype=np.uint8), 'ego': rng.standard_normal(EGO).astype(np.float32)}
        replay.add(obs, np.eye(ACTIONS)[rng.integers(ACTIONS)], float(rng.standard_normal()), t % 30 == 0, False)
    return replay


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    agent = Agent(load_preset('tiny'), BEV, EGO, ACTIONS, seed=5)
    path = save_checkpoint(tmp_path / 'ckpt', agent, 'some_task', 123, {'success': 0.5}, filled_replay(),
                           contract=CONTRACT)
    return agent, path


def observation(seed=1):
    rng = np.random.default_rng(seed)
    return {'bev': rng.integers(0, 256, BEV, dtype=np.uint8), 'ego': rng.standard_normal(EGO).astype(np.float32)}


def test_save_then_load_gives_identical_outputs(saved):
    agent, path = saved
    loaded, meta = load_checkpoint(path, preset_name='tiny', seed=5)
    assert meta['task'] == 'some_task' and meta['step'] == 123 and meta['metrics'] == {'success': 0.5}
    assert meta['preset']['name'] == 'tiny' and len(meta['sha256']) == 64
    original = agent.state_dict()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, original[name]), name
    agent.generator.manual_seed(5)
    state_a = state_b = None
    for step in range(3):
        a, state_a, info_a = agent.act(observation(step), state_a, 'plan')
        b, state_b, info_b = loaded.act(observation(step), state_b, 'plan')
        assert a == b
        assert torch.equal(info_a['scores'], info_b['scores'])


def test_replay_summary_ships_beside_the_checkpoint(saved):
    agent, path = saved
    summary = load_replay_summary(path)
    p = agent.preset
    assert summary['codes'].shape == (256, p.seq_len, p.stoch) and summary['codes'].max() < p.classes
    assert summary['action'].shape == (256, p.seq_len) and summary['action'].max() < ACTIONS
    assert summary['raw_bev'].shape == (8, p.seq_len, *BEV) and summary['raw_bev'].dtype == torch.uint8


def test_refuses_changed_weights(saved):
    _, path = saved
    weights = path / 'model.safetensors'
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match='sha256'):
        load_checkpoint(path)


def test_refuses_other_preset_and_wrong_shapes(saved):
    _, path = saved
    with pytest.raises(CheckpointError, match="preset 'tiny', not the requested 'small'"):
        load_checkpoint(path, preset_name='small')
    meta = json.loads((path / 'model.json').read_text())
    meta['preset']['deter'] = 48  # sidecar claims another size than the weights hold
    (path / 'model.json').write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r'wrong shapes.*\n.*world_model\.rssm\.'):
        load_checkpoint(path)


def test_refuses_a_directory_without_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match='model.json not found'):
        load_checkpoint(tmp_path)


def test_the_contract_travels_with_the_checkpoint(saved):
    _, path = saved
    _, meta = load_checkpoint(path)
    assert meta['contract'] == CONTRACT
    table = meta['contract'].action_table()
    assert table.control(0) == {'throttle': 0.0, 'steer': -0.6, 'brake': pytest.approx(2 / 3)}
    assert table.index(table.control(13)) == 13


@pytest.mark.parametrize('damage', ['drop', 'unknown field', 'no period'])
def test_a_checkpoint_without_a_usable_contract_is_refused(saved, damage):
    _, path = saved
    meta = json.loads((path / 'model.json').read_text())
    if damage == 'drop':
        del meta['contract']
    elif damage == 'unknown field':
        meta['contract']['gears'] = 6
    else:
        del meta['contract']['step_period']
    (path / 'model.json').write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match='contract'):
        load_checkpoint(path)
