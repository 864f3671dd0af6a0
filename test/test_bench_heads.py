"""bench/bench_heads.py: what the reward and continue heads predict at a task's crashes and episode ends."""

import numpy as np
import pytest

from adawm_planner.core.checkpoint import load_checkpoint


@pytest.fixture
def bench(bench_module):
    return bench_module('bench_heads')


def test_the_report_counts_crashes_and_ends_where_they_happened(bench, tiny_checkpoint):
    agent, _ = load_checkpoint(tiny_checkpoint)
    episodes = bench.drive(agent, 'right_turn-sparse', 2)
    assert [len(e['reward']) for e in episodes] == [len(e['bev']) for e in episodes]
    last = len(episodes[0]['reward']) - 1
    crashed = dict(episodes[0], outcome='collision', reward=np.where(np.arange(last + 1) == last, -120.0, 1.0))
    cut = dict(episodes[1], outcome='timeout')
    report = bench.heads_report(agent, [crashed, cut])
    assert report['steps'] == len(crashed['reward']) + len(cut['reward']) - 2    # step 0 predicts no reward
    assert report['crashes'] == 1 and report['crash_true'] == -120.0 and np.isfinite(report['crash_ahead'])
    # the collision episode's last step is a failing end; a timeout is cut, not ended: its steps are 'other'
    assert report['failed'] == 1 and np.isnan(report['cont_arrive'])
    assert 0.0 <= report['cont_fail'] <= 1.0 and 0.0 <= report['cont_other'] <= 1.0
    assert report['contact_crash'] in (0.0, 1.0) and 0.0 <= report['contact_other'] <= 1.0


def test_bev_contact_is_another_vehicle_over_the_ego(bench):
    from adawm_planner.core.bev import CHANNELS
    bev = np.zeros((3, 8, 8, len(CHANNELS)), np.uint8)
    bev[:, 3:5, 3:5, CHANNELS.index('ego')] = 255
    bev[1, 0:2, 0:2, CHANNELS.index('vehicles')] = 255      # a vehicle beside the ego
    bev[2, 4:6, 4:6, CHANNELS.index('vehicles')] = 255      # one over a corner of its box
    assert bench.bev_contact(bev).tolist() == [False, False, True]


def test_the_bench_prints_a_row_per_task(bench, tiny_checkpoint, capsys):
    assert bench.main(['--checkpoint', str(tiny_checkpoint), '--tasks', 'right_turn-sparse', '--episodes', '1']) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].split()[0] == 'right_turn-sparse' and len(lines[-1].split()) == 14
