"""The strategy table: intervals, area under the success curve, runs from several grid processes."""
import csv
import json
import shutil
import math

import pytest

from adawm_planner.experiments.report import (
    decisions_of, difference, interval, known_side_shares, publish, success_auc, verdict, write_report)


def test_interval_is_the_student_t_interval():
    mean, half = interval([0.2, 0.4, 0.6])
    # std (ddof 1) = 0.2, t(0.975, 2) = 4.303
    assert mean == pytest.approx(0.4) and half == pytest.approx(4.303 * 0.2 / math.sqrt(3))
    assert math.isnan(interval([0.5])[1])
    assert interval([0.3] * 5)[1] == 0.0


def test_difference_interval_and_verdict():
    diff, half = difference([0.8, 0.9, 1.0], [0.2, 0.3, 0.4])
    # equal variances 0.01, n 3 + 3: Welch df = 4, t = 2.776, se = sqrt(0.01/3 + 0.01/3)
    assert diff == pytest.approx(0.6) and half == pytest.approx(2.776 * math.sqrt(0.02 / 3))
    assert verdict(diff, half) == 'win' and verdict(-diff, half) == 'loss' and verdict(0.1, half) == 'tie'
    assert verdict(*difference([0.5], [0.1, 0.2])) == '?'


def test_auc_is_mean_success_over_the_run():
    curve = [{'env_step': s, 'success': v} for s, v in ((0, 0.0), (1000, 1.0), (3000, 1.0))]
    assert success_auc(curve) == pytest.approx((0.5 * 1000 + 1.0 * 2000) / 3000)


def fake_run(root, strategy, seed, final, decisions):
    run = root / strategy / f'seed{seed}'
    run.mkdir(parents=True)
    with open(run / 'curve.csv', 'w', newline='') as f:
        writer = csv.DictWriter(f, ['env_step', 'success'])
        writer.writeheader()
        writer.writerows([{'env_step': 0, 'success': 0.5}, {'env_step': 100, 'success': final}])
    with open(run / 'trace.csv', 'w', newline='') as f:
        writer = csv.DictWriter(f, ['finetune_step', 'eps_model', 'eps_policy'])
        writer.writeheader()
        writer.writerows([{'finetune_step': i, 'eps_model': 0.5, 'eps_policy': 0.1} for i in range(4)])
    metrics = lambda s: {'success': s, 'collision': 0.1, 'return': 10.0}
    (run / 'result.json').write_text(json.dumps({
        'strategy': strategy, 'seed': seed, 'steps': 100, 'pretrain_task': 'a', 'task': 'b',
        'config': {'threshold_c': 1.0}, 'wall_s': 1.0, 'before': metrics(0.5), 'after': metrics(final),
        'finetune_steps': sum(decisions.values()),
        'decisions': {'model': 0, 'policy': 0, 'both': 0, 'none': 0, **decisions}}))


def test_report_reads_every_finished_run(tmp_path):
    # two grid processes wrote here: adawm with 3 seeds, full with 1; a run without result.json is unfinished
    for seed, final in enumerate((0.6, 0.8, 1.0)):
        fake_run(tmp_path, 'adawm', seed, final, {'model': 3, 'policy': 1})
    fake_run(tmp_path, 'full', 0, 0.2, {'both': 4})
    (tmp_path / 'policy' / 'seed0').mkdir(parents=True)
    rows = {r['strategy']: r for r in write_report(tmp_path, 'a', 'b')}
    assert set(rows) == {'adawm', 'full'} and rows['adawm']['seeds'] == 3
    assert rows['adawm']['success_mean'] == pytest.approx(0.8)
    assert rows['adawm']['auc_mean'] == pytest.approx(0.65)
    assert rows['adawm']['model_share_mean'] == pytest.approx(0.75) and rows['full']['model_share_mean'] == 1.0
    table = (tmp_path / 'table.md').read_text()
    assert '| adawm | 3 | 0.50 | 0.80 ± 0.50 |' in table and '| full | 1 | 0.50 | 0.20 |' in table
    assert (tmp_path / 'learning_curves.png').stat().st_size > 0 and (tmp_path / 'mismatch.png').exists()


def test_publish_copies_tables_and_lists_every_run(tmp_path):
    runs, docs = tmp_path / 'runs', tmp_path / 'docs'
    fake_run(runs / 'pair_x', 'policy', 0, 0.7, {'policy': 4})
    fake_run(runs / 'pair_x', 'model', 0, 0.1, {'model': 4})
    fake_run(runs / 'pair_x', 'model', 1, 0.2, {'model': 4})
    fake_run(runs / 'pair_x', 'adawm', 0, 0.8, {'model': 1, 'policy': 3})
    fake_run(runs / 'pair_x', 'adawm', 1, 0.9, {'model': 1, 'policy': 3})
    (runs / 'empty_pair').mkdir()
    publish(runs, docs)
    assert (docs / 'pair_x' / 'table.md').read_text().startswith('# a → b')
    assert not (docs / 'empty_pair').exists()
    with open(docs / 'runs.csv') as f:
        rows = list(csv.DictReader(f))
    assert [(r['pair'], r['strategy'], r['seed'], r['model_steps']) for r in rows] == [
        ('pair_x', 'adawm', '0', '1'), ('pair_x', 'adawm', '1', '1'), ('pair_x', 'model', '0', '4'),
        ('pair_x', 'model', '1', '4'), ('pair_x', 'policy', '0', '0')]
    summary = (docs / 'summary.md').read_text()
    # adawm 0.85 vs model 0.15, each variance 0.005 over 2 seeds: Welch df 2, t 4.303, se sqrt(0.005)
    assert '| pair_x | +0.70 ± 0.30 (2/2) **win** | +0.15 ± nan (2/1) ? |' in summary


def test_known_side_share_over_the_run_and_by_quarter(tmp_path):
    runs, docs = tmp_path / 'runs', tmp_path / 'docs'
    fake_run(runs / 'dyn', 'adawm', 0, 0.5, {'model': 5, 'policy': 3})
    run = runs / 'dyn' / 'adawm' / 'seed0'
    with open(run / 'trace.csv', 'w', newline='') as f:   # model for 5 steps, then the policy
        writer = csv.DictWriter(f, ['finetune_step', 'eps_model', 'eps_policy', 'decision'])
        writer.writeheader()
        writer.writerows([{'finetune_step': i, 'eps_model': 0.5, 'eps_policy': 0.1,
                           'decision': 'model' if i < 5 else 'policy' if i < 7 else 'none'} for i in range(8)])
    result = json.loads((run / 'result.json').read_text())
    result['config']['known_side'] = 'model'
    (run / 'result.json').write_text(json.dumps(result))
    assert known_side_shares(decisions_of(run), 'model') == [1.0, 1.0, 0.5, 0.0]
    assert known_side_shares(decisions_of(run), 'model', parts=1, updates_only=True) == [pytest.approx(5 / 7)]
    publish(runs, docs)
    assert '| dyn | model | 1 | 0.62 (0.62–0.62) | 1.00 / 1.00 / 0.50 / 0.00 | 0.71 |' in (docs / 'summary.md').read_text()


def test_publish_keeps_pairs_whose_run_folders_are_gone(tmp_path):
    """A new machine has the committed record but not the earlier runs' folders: publishing the pairs run
    there keeps the others' rows, their summary lines and their known-answer shares."""
    runs, docs = tmp_path / 'runs', tmp_path / 'docs'
    for seed, final in enumerate((0.8, 0.9)):
        fake_run(runs / 'old', 'adawm', seed, final, {'model': 1, 'policy': 3})
        fake_run(runs / 'old', 'model', seed, final - 0.7, {'model': 4})
    run = runs / 'old' / 'adawm' / 'seed0'
    result = json.loads((run / 'result.json').read_text())
    result['config']['known_side'] = 'model'
    (run / 'result.json').write_text(json.dumps(result))
    with open(run / 'trace.csv', 'w', newline='') as f:
        writer = csv.DictWriter(f, ['finetune_step', 'eps_model', 'eps_policy', 'decision'])
        writer.writeheader()
        writer.writerows([{'finetune_step': i, 'eps_model': 0.5, 'eps_policy': 0.1, 'decision': 'model'}
                          for i in range(4)])
    publish(runs, docs)
    before = (docs / 'summary.md').read_text()
    assert '| old | +0.70 ± 0.30 (2/2) **win** |' in before and '| old | model | 1 |' in before

    shutil.rmtree(runs / 'old')
    fake_run(runs / 'new', 'adawm', 0, 0.5, {'policy': 4})
    fake_run(runs / 'new', 'policy', 0, 0.4, {'policy': 4})
    publish(runs, docs)
    with open(docs / 'runs.csv') as f:
        rows = list(csv.DictReader(f))
    assert [(r['pair'], r['strategy'], r['seed']) for r in rows] == [
        ('new', 'adawm', '0'), ('new', 'policy', '0'), ('old', 'adawm', '0'), ('old', 'adawm', '1'),
        ('old', 'model', '0'), ('old', 'model', '1')]
    after = (docs / 'summary.md').read_text()
    assert '| old | — | +0.70 ± 0.30 (2/2) **win** |' in after and '| new | +0.10 ± nan (1/1) ? | — |' in after
    known = [line for line in before.splitlines() if line.startswith('| old | model |')]
    assert known and known[0] in after
    assert (docs / 'old' / 'table.md').exists()


def test_later_seeds_join_a_pairs_published_seeds(tmp_path):
    """Seeds 0-1 published from one machine, seed 2 run on another that has only the record: the pair's
    table, runs.csv and summary count all three; a seed run again replaces its row."""
    runs, docs = tmp_path / 'runs', tmp_path / 'docs'
    for seed, final in enumerate((0.6, 0.8)):
        fake_run(runs / 'p', 'adawm', seed, final, {'model': 1, 'policy': 3})
        fake_run(runs / 'p', 'policy', seed, 0.2, {'policy': 4})
    publish(runs, docs)
    shutil.rmtree(runs / 'p')
    fake_run(runs / 'p', 'adawm', 2, 1.0, {'model': 3, 'policy': 1})
    fake_run(runs / 'p', 'policy', 1, 0.4, {'policy': 4})   # seed 1 again: its new result replaces the old
    publish(runs, docs)
    with open(docs / 'runs.csv') as f:
        rows = list(csv.DictReader(f))
    assert [(r['strategy'], r['seed'], r['success_after']) for r in rows] == [
        ('adawm', '0', '0.6'), ('adawm', '1', '0.8'), ('adawm', '2', '1.0'), ('policy', '0', '0.2'),
        ('policy', '1', '0.4')]
    table = {r['strategy']: r for r in csv.DictReader(open(docs / 'p' / 'table.csv'))}
    assert table['adawm']['seeds'] == '3' and float(table['adawm']['success_mean']) == pytest.approx(0.8)
    assert float(table['adawm']['model_share_mean']) == pytest.approx((0.25 + 0.25 + 0.75) / 3)
    assert table['policy']['seeds'] == '2' and float(table['policy']['success_mean']) == pytest.approx(0.3)
    assert '(3/2)' in (docs / 'summary.md').read_text()
