"""bench/bench_judge.py: the rollback judge replayed on adaptation-off episodes (every rollback a false one)."""
import json

import numpy as np
import pytest


@pytest.fixture
def bench(bench_module):
    return bench_module('bench_judge')


def test_harmless_adapters_are_kept_and_broken_ones_caught(bench, tmp_path, capsys):
    rng = np.random.default_rng(0)
    outcomes = rng.random(200) < 0.6
    episodes = [{'seed': k, 'outcome': 'success' if ok else 'collision',
                 'return': float(rng.normal(300, 30) if ok else rng.normal(-100, 30))} for k, ok in enumerate(outcomes)]
    runs = [{'arm': 'off', 'seed': 0, 'episode_list': episodes},
            {'arm': 'adawm', 'seed': 0, 'episode_list': episodes[:5]}]     # adapting arms are not replayed
    (tmp_path / 'runs.json').write_text(json.dumps(runs))
    assert bench.main([str(tmp_path / 'runs.json'), '--episodes', '5', '--margins', '1.64', '--harm', '1.0',
                       '--drift', '0.2']) == 0
    out = capsys.readouterr().out.splitlines()
    assert '1 adaptation-off runs, 200 episodes' in out[0]
    rows = {}
    for line in out[-3:]:
        episodes_on_trial, margin, judge, verdicts, harmless, to_base, harmful, kept, drifting, mixed = line.split()
        rows[judge] = (int(verdicts), float(harmless), float(to_base), float(harmful), float(kept), float(drifting),
                       float(mixed))
    for verdicts, harmless, to_base, harmful, kept, drifting, mixed in rows.values():
        assert verdicts >= 10 and harmless <= 0.2 and harmful >= 0.8 and to_base <= harmless
        assert 0 < kept <= 1.2 and 0 < drifting <= 1.2 and 0 < mixed <= 1.2
    assert rows['bar'][0] == 20                                    # 5 bar + 5 trial episodes per verdict
    assert rows['bar'][2] == 0                                     # the bar alone never goes past the last good
    for judge in ('looks', 'final'):
        assert rows[judge][4] > rows['bar'][4]                     # backing off: fewer episodes on broken trials
        assert rows[judge][5] > rows['bar'][5]                     # the floor stops the drifting chain sooner


def test_no_adaptation_off_run_is_refused(bench, tmp_path):
    (tmp_path / 'runs.json').write_text(json.dumps([{'arm': 'adawm', 'seed': 0, 'episode_list': []}]))
    assert bench.main([str(tmp_path / 'runs.json')]) == 2
