"""The arithmetic of the live comparison (adawm_planner/live.py, demo --compare, bench_live) on the messages
a StackMonitor collects: windows of simulated time, the trend, the comparison with the baseline; and the
adaptation node's progress report that a lockstep bridge reads."""
import pytest


def stamped(msg, t):
    msg.header.stamp.sec, msg.header.stamp.nanosec = int(t), int(round((t - int(t)) * 1e9))
    return msg


def episode(t, outcome, episode_return):
    from adawm_msgs.msg import EpisodeOutcome
    return stamped(EpisodeOutcome(outcome=outcome, episode_return=episode_return), t)


def report(t):
    from adawm_msgs.msg import MismatchReport
    return stamped(MismatchReport(), t)


def status(t, target, version, state):
    from adawm_msgs.msg import AdapterStatus
    return stamped(AdapterStatus(target=target, version=version, state=state), t)


@pytest.fixture
def run():
    """Two 60-s windows and a partial third (to 150 s): 3 episodes, then 2, then 1."""
    from adawm_msgs.msg import AdapterStatus as S, EpisodeOutcome as E
    episodes = [episode(10, E.OUTCOME_COLLISION, -5.0), episode(30, E.OUTCOME_SUCCESS, 10.0),
                episode(59.99, E.OUTCOME_TIMEOUT, 1.0),
                episode(60.0, E.OUTCOME_SUCCESS, 12.0), episode(100, E.OUTCOME_SUCCESS, 8.0),
                episode(150.02, E.OUTCOME_OFF_ROUTE, -1.0)]   # heard just after the run's last frame
    reports = [report(t) for t in (20, 25, 70, 80, 90, 130)]
    statuses = [status(40, S.TARGET_POLICY, 1, S.STATE_APPLIED),
                status(40.05, S.TARGET_POLICY, 1, S.STATE_APPLIED),   # the planner says it too: counted once
                status(75, S.TARGET_POLICY, 1, S.STATE_ROLLED_BACK),
                status(140, S.TARGET_MODEL, 2, S.STATE_APPLIED)]
    return episodes, reports, statuses


def test_windows_count_what_ended_in_them(run):
    from adawm_planner import live
    rows = live.windows(*run, window_s=60.0, end_s=150.0)
    assert [(r['start_s'], r['end_s'], r['episodes']) for r in rows] == [(0, 60, 3), (60, 120, 2), (120, 150, 1)]
    first, second, third = rows
    assert first['success_rate'] == pytest.approx(1 / 3) and first['collision_rate'] == pytest.approx(1 / 3)
    assert first['mean_return'] == pytest.approx(2.0)
    assert (second['success_rate'], second['collision_rate'], second['mean_return']) == (1.0, 0.0, 10.0)
    assert third['success_rate'] == 0.0   # an off-route ending heard after the last frame: the last window's
    assert [(r['adapters_applied'], r['adapters_rolled_back']) for r in rows] == [(1, 0), (0, 1), (1, 0)]
    # finetuning steps per simulated minute: 2 in 60 s, 3 in 60 s, 1 in the last 30 s
    assert [r['finetune_steps_per_min'] for r in rows] == pytest.approx([2.0, 3.0, 2.0])


def test_window_without_episodes_has_no_rates_and_trend_skips_it(run):
    from adawm_planner import live
    episodes, reports, statuses = run
    rows = live.windows([e for e in episodes if live.stamp(e) < 60], reports, statuses, 60.0, 150.0)
    assert rows[1]['episodes'] == 0 and rows[1]['success_rate'] is None and rows[1]['mean_return'] is None
    assert live.trend(rows) == (pytest.approx(1 / 3), pytest.approx(1 / 3))   # first and last rated: both window 0
    assert live.trend(live.windows(*run, window_s=60.0, end_s=150.0)) == (pytest.approx(1 / 3), 0.0)
    assert live.trend(live.windows([], [], [], 60.0, 0.0)) == (None, None)


def test_table_and_comparison_print_every_window(run):
    from adawm_planner import demo, live
    from adawm_msgs.msg import EpisodeOutcome as E
    adapted = live.windows(*run, window_s=60.0, end_s=150.0)
    baseline = live.windows([episode(t, E.OUTCOME_COLLISION, -5.0) for t in (20, 80, 130)], [], [], 60.0, 150.0)
    table = live.window_table(adapted)
    assert len(table.splitlines()) == 4 and '—' not in table
    text = demo.format_comparison(adapted, baseline, 'adawm')
    lines = text.splitlines()
    assert lines[2].split() == ['0-60', '0.33', '0.00', '+0.33']
    assert lines[3].split() == ['60-120', '1.00', '0.00', '+1.00']
    assert lines[5].split()[:5] == ['whole', 'run', '0.50', '0.00', '+0.50']   # 3 of 6 vs 0 of 3
    assert demo.format_trend(adapted, 60.0).endswith(
        '0.33 in the first 60-s window with episodes (0-60 s), 0.00 in the last (120-150 s): -0.33')


@pytest.fixture
def bench(bench_module):
    return bench_module('bench_live')


def test_bench_summary_means_over_seeds(bench):
    rows = [{'arm': arm, 'seed': seed, 'window': w, 'success_rate': rate}
            for arm, seed, w, rate in [('off', 0, 0, 0.5), ('off', 1, 0, 0.3), ('off', 0, 1, 0.4), ('off', 1, 1, None),
                                       ('adawm', 0, 0, 0.2), ('adawm', 1, 0, 0.4), ('adawm', 0, 1, 0.9),
                                       ('adawm', 1, 1, 0.7)]]
    assert bench.mean_by_window(rows, 'off', 'success_rate') == pytest.approx({0: 0.4, 1: 0.4})
    assert bench.mean_by_window(rows, 'adawm', 'success_rate') == pytest.approx({0: 0.3, 1: 0.8})


def test_bench_pairs_episodes_by_seed(bench):
    def run(arm, seed, outcomes):
        return {'arm': arm, 'seed': seed,
                'episode_list': [{'seed': seed + k, 'outcome': o} for k, o in enumerate(outcomes)]}
    runs = [run('off', 0, ['success', 'collision', 'success', 'timeout']),
            run('adawm', 0, ['success', 'success', 'collision']),
            run('off', 10, ['collision']), run('adawm', 10, ['collision', 'success']),
            run('policy', 0, ['success'])]   # episode 3 of off and episode 11 of adawm have no partner
    lines = bench.paired_text(runs).splitlines()
    assert lines[1].split() == ['adawm', '1', '/', '1', '/', '1', '/', '1', '(4', 'episodes)']
    assert lines[2].split() == ['policy', '1', '/', '0', '/', '0', '/', '0', '(1', 'episodes)']


def test_demo_refuses_a_window_that_is_not_positive(capsys):
    from adawm_planner import cli
    assert cli.main(['demo', '--window', '0', '--out', 'never-written']) == 2
    assert capsys.readouterr().err.strip() == 'adawm demo: --window must be positive, got 0'


def test_progress_report_round_trip():
    from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

    from adawm_planner.nodes import progress
    msg = progress.progress_msg(12.35, requested=7, skipped=1, finished=5, unsettled=1)
    assert progress.progress_of_msg(msg) == (12.35, 2)   # 7 asked, 1 skipped, 5 done, 1 verdict to act on
    assert progress.progress_of_msg(progress.progress_msg(None, 0, 0, 0, 0)) == (-1.0, 0)
    with pytest.raises(ValueError, match='not an adaptation progress report'):
        progress.progress_of_msg(DiagnosticStatus(values=[KeyValue(key='frame', value='1.0')]))


def test_beyond_noise_pools_the_seeds_and_marks_only_clear_differences(bench):
    def row(arm, seed, window, episodes, success):
        return {'arm': arm, 'seed': seed, 'window': window, 'episodes': episodes, 'success_rate': success}
    rows = [row('off', s, w, 20, 0.5) for s in (0, 1) for w in (0, 1, 2)]
    rows += [row('adawm', 0, 0, 20, 0.45), row('adawm', 1, 0, 20, 0.55),   # level with off: 20/40 vs 20/40
             row('adawm', 0, 1, 20, 0.9), row('adawm', 1, 1, 20, 0.95),    # 37/40: above
             row('adawm', 0, 2, 10, 0.0), row('adawm', 1, 2, 10, 0.1)]     # 1/20: below
    text = bench.beyond_noise_text(rows, ['off', 'adawm'])
    lines = text.splitlines()[2:]
    assert lines[0].split() == ['adawm', '0', '20/40', '20/40', '0.588', '0.588']   # level: no mark
    assert lines[1].split()[2:4] == ['37/40', '20/40'] and lines[1].endswith('above')
    assert lines[2].split()[2:4] == ['1/20', '20/40'] and lines[2].endswith('below')
