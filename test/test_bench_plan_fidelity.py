"""bench/bench_plan_fidelity.py: imagination's ranking of candidate plans against the simulator's own."""
import copy

import numpy as np
import pytest


def test_true_returns_drive_copies_and_leave_the_env_alone(bench_module):
    from adawm_planner.sim import make_env
    bench = bench_module('bench_plan_fidelity')
    env = make_env('right_turn-sparse', seed=3)
    env.reset(seed=3)
    before = copy.deepcopy(env)
    actions = np.array([[2] * 5, [4] * 5, [2] * 5])
    returns, failed = bench.true_returns(env, actions, gamma=0.99)
    assert returns.shape == (3,) and failed.dtype == bool and returns[0] == returns[2]   # copies: same start
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
                       '--particles', '2']) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split('|')[1].strip(): line.split('|')[2:-1] for line in lines if line.startswith('| ')}
    assert set(rows) == {'model', 'pretrained', 'repaired', 'repaired - pretrained'}
    states = int(rows['pretrained'][0])
    assert states >= 1 and int(rows['repaired'][0]) == states
    # the same candidates and truth for both: what the best candidate earns over the actor's is the same
    assert rows['pretrained'][5] == rows['repaired'][5] and rows['repaired - pretrained'][5].strip().startswith('0.00')
