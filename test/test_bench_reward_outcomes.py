"""bench/bench_reward_outcomes.py: the episodes of a run's final agent, grouped by how they ended."""


def test_by_outcome_groups_returns_and_lengths(bench_module):
    bench = bench_module('bench_reward_outcomes')
    rows = [{'success': 1.0, 'collision': 0.0, 'off_route': 0.0, 'timeout': 0.0, 'return': 50.0, 'length': 90},
            {'success': 0.0, 'collision': 0.0, 'off_route': 1.0, 'timeout': 0.0, 'return': 70.0, 'length': 80},
            {'success': 0.0, 'collision': 0.0, 'off_route': 1.0, 'timeout': 0.0, 'return': 90.0, 'length': 100}]
    table = bench.by_outcome(rows)
    assert table['success'] == (1, 50.0, 90.0) and table['off_route'] == (2, 80.0, 90.0)
    assert table['collision'][0] == 0 and table['timeout'][0] == 0


def test_the_bench_evaluates_a_finished_run(bench_module, tiny_checkpoint, tmp_path, capsys):
    from adawm_planner.core.config import FinetuneConfig
    from adawm_planner.experiments.finetune import finetune
    bench = bench_module('bench_reward_outcomes')
    run = tmp_path / 'model/seed0'
    finetune(tiny_checkpoint, 'right_turn-sparse', 32, run, config=FinetuneConfig(strategy='model', window=8,
             train_every=8), eval_every=32, eval_episodes=1, progress=False)
    assert bench.main([str(run), '--mode', 'actor', '--episodes', '2']) == 0
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith('| model/seed0 |')]
    assert len(row) == 1
    cells = [c.strip() for c in row[0].split('|')[1:-1]]
    assert cells[1] == 'right_turn-sparse' and 0.0 <= float(cells[2]) <= 1.0
    assert sum(int(c.split(',')[0]) for c in cells[4:]) == 2   # every episode ended one way
