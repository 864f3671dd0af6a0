"""bench/bench_improvement.py: the improvement the model offers over the actor, ≥ 0 by construction."""
import pytest

from adawm_planner.core.checkpoint import load_checkpoint


@pytest.fixture
def bench(bench_module):
    return bench_module('bench_improvement')


def test_improvement_is_the_greedy_gap_under_common_noise(bench, tiny_checkpoint):
    agent, _ = load_checkpoint(tiny_checkpoint)
    values, outcomes = bench.measure(agent, 'right_turn-sparse', episodes=1, every=60, particles=2)
    assert values and all(v >= 0.0 for v in values) and sum(outcomes.values()) == 1
    _, state, _ = agent.act(bench.make_env('right_turn-sparse', seed=0).reset(seed=0)[0], None, 'actor')
    # common random numbers: the same state and seed give the same number
    assert bench.improvement(agent, state['latent'], 2, 7) == bench.improvement(agent, state['latent'], 2, 7)


def test_the_bench_prints_a_row_per_task(bench, tiny_checkpoint, capsys):
    assert bench.main(['--checkpoint', str(tiny_checkpoint), '--tasks', 'right_turn-sparse', '--episodes', '1',
                       '--every', '60', '--particles', '2']) == 0
    assert capsys.readouterr().out.splitlines()[-1].split()[0] == 'right_turn-sparse'
