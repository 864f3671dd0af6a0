"""bench/bench_plan_fidelity.py: imagination's ranking of candidate plans against the simulator's own."""
import copy

import numpy as np
import pytest
import torch


def test_true_returns_drive_copies_and_leave_the_env_alone(bench_module, tiny_checkpoint):
    from adawm_planner.core.checkpoint import load_checkpoint
    from adawm_planner.sim import make_env
    bench = bench_module('bench_plan_fidelity')
    agent, _ = load_checkpoint(tiny_checkpoint, seed=0)
    env = make_env('right_turn-sparse', seed=3)
    obs, _ = env.reset(seed=3)
    _, state, _ = agent.act(obs, None, 'actor')
    before = copy.deepcopy(env)
    actions = np.array([[2] * 5, [4] * 5, [2] * 5])
    returns, failed, to_go = bench.true_returns(env, actions, 0.99, agent, state, tail=3)
    assert returns.shape == to_go.shape == (3,) and failed.dtype == bool
    assert returns[0] == returns[2]   # copies: the same start, the same actions
    # five steps from the start nothing ends the episode: the actor drove on after every candidate
    assert np.isfinite(to_go).all() and not failed.any()
    # the env itself did not move: its next step is what a copy's is
    assert env.step(2)[1] == before.step(2)[1]


def test_spearman_is_a_rank_correlation(bench_module):
    bench = bench_module('bench_plan_fidelity')
    assert bench.spearman(np.array([1.0, 2.0, 3.0]), np.array([10.0, 200.0, 3000.0])) == pytest.approx(1.0)
    assert bench.spearman(np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0])) == pytest.approx(-1.0)
    assert np.isnan(bench.spearman(np.array([1.0, 1.0]), np.array([1.0, 2.0])))


def test_the_bench_repairs_and_compares_both_models(bench_module, tiny_checkpoint, capsys):
    bench = bench_module('bench_plan_fidelity')
    assert bench.main(['--checkpoint', str(tiny_checkpoint), '--pair', 'dynamics', '--steps', '60',
                       '--updates', '2', '--episodes', '1', '--every', '25', '--candidates', '4',
                       '--particles', '2', '--tail', '5']) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split('|')[1].strip(): line.split('|')[2:-1] for line in lines if line.startswith('| ')}
    assert set(rows) == {'model', 'pretrained', 'prior head', 'open loop', 'prior head - pretrained',
                         'open loop - pretrained'}
    states = int(rows['pretrained'][0])
    assert states >= 1 and int(rows['prior head'][0]) == int(rows['open loop'][0]) == states
    # the same candidates and truth for all: what the best candidate earns over the actor's is the same
    assert rows['pretrained'][5] == rows['prior head'][5] == rows['open loop'][5]
    assert rows['open loop - pretrained'][5].strip().startswith('0.00')
    # ... and over the whole return, the actor driving on after each candidate's horizon
    assert rows['pretrained'][10] == rows['prior head'][10] == rows['open loop'][10]


def test_the_open_loop_repair_trains_the_imagination_step_only(bench_module, tiny_checkpoint):
    from adawm_planner.core.checkpoint import load_checkpoint
    bench = bench_module('bench_plan_fidelity')
    from adawm_planner.core.config import FinetuneConfig
    from adawm_planner.experiments import mismatch_reference
    base, _ = load_checkpoint(tiny_checkpoint, seed=0)
    agent, _ = load_checkpoint(tiny_checkpoint, seed=0)
    agent.preset = agent.preset.replace(free_nats=0.0)   # an untrained model's KLs sit below the free nat
    episodes = mismatch_reference.collect(base, 'right_turn_lagged-moderate', 5, 7, mode='sample', max_steps=80)
    replay = bench.replay_of(episodes, base.action_dim)
    before = {k: v.clone() for k, v in agent.world_model.state_dict().items()}
    bench.open_loop_repair(agent, base, replay, 3, 4, FinetuneConfig(strategy='model'))
    after = agent.world_model.state_dict()
    moved = {k for k in after if '.lora_B.' in k and after[k].abs().sum() > 0}
    assert moved and all(k.startswith(('rssm.img_in', 'rssm.gru', 'rssm.img_out', 'rssm.prior')) for k in moved)
    base_weights = {k.replace('.base_layer.', '.'): v for k, v in after.items() if '.lora_' not in k}
    assert all(torch.equal(before[k], v) for k, v in base_weights.items())
