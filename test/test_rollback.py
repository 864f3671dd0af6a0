"""The adapter judge: keep what drives at least as well, roll back what drives worse."""
import pytest

from adawm_planner.core.rollback import AdapterJudge


def drive(judge, returns, success=False):
    verdicts = [judge.episode(r, success) for r in returns]
    return [v for v in verdicts if v is not None]


def test_worse_adapter_is_rolled_back_better_is_kept():
    judge = AdapterJudge(episodes=3, margin=0.2)
    assert drive(judge, [100, 110, 90]) == []
    judge.applied(1)
    [verdict] = drive(judge, [60, 70, 65])
    assert not verdict.keep and verdict.version == 1 and 'fell from 100.0 to 65.0' in verdict.reason
    judge.applied(2)   # after the rollback the bar is still the episodes before adapter 1
    [verdict] = drive(judge, [70, 72, 75])
    assert not verdict.keep and 'fell from 100.0' in verdict.reason
    judge.applied(3)
    assert drive(judge, [95, 100, 99])[0].keep


def test_within_margin_is_kept_and_success_drop_counts():
    judge = AdapterJudge(episodes=2, margin=0.2)
    drive(judge, [100, 100], success=True)
    judge.applied(3)
    assert drive(judge, [85, 85], success=True)[0].keep
    judge.applied(4)
    verdict = drive(judge, [85, 85], success=False)[0]
    assert not verdict.keep and 'success rate fell' in verdict.reason


def test_superseded_adapter_gets_no_verdict():
    judge = AdapterJudge(episodes=2)
    drive(judge, [10, 10])
    judge.applied(5)
    drive(judge, [1])
    judge.applied(6)
    [verdict] = drive(judge, [10, 10])
    assert verdict.version == 6


def test_superseded_before_any_episode_keeps_the_bar():
    judge = AdapterJudge(episodes=2)
    drive(judge, [10, 10])
    judge.applied(7)
    judge.applied(8)
    [verdict] = drive(judge, [1, 1])
    assert verdict.version == 8 and not verdict.keep and 'fell from 10.0 to 1.0' in verdict.reason


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        AdapterJudge(episodes=0)


class FakeAdapter:
    """Stands in for lora.Adapter where only the version matters (the lifecycle never reads tensors)."""
    def __init__(self, version):
        self.meta = type('Meta', (), {'version': version})()


def test_lifecycle_versions_are_never_reused_across_restarts(tmp_path):
    from adawm_planner.core.rollback import AdapterLifecycle
    first = AdapterLifecycle(tmp_path, AdapterJudge(episodes=2, margin=0.2))
    assert [first.next_version(), first.next_version()] == [1, 2]
    again = AdapterLifecycle(tmp_path, None)
    assert again.next_version() == 3


def test_lifecycle_trial_keep_and_roll_back(tmp_path):
    from adawm_planner.core.rollback import AdapterLifecycle
    life = AdapterLifecycle(tmp_path, AdapterJudge(episodes=2, margin=0.2))
    assert not life.ready()
    life.trained(['policy'])
    life.trained(['model', 'policy'])
    assert life.ready() and life.take_round() == ['model', 'policy'] and not life.ready()
    for r in (100, 100):
        assert life.episode(r, True) is None
    v1 = {'model': FakeAdapter(life.next_version()), 'policy': FakeAdapter(life.next_version())}
    life.applied(v1)
    life.trained(['policy'])
    assert not life.ready()                         # one round on trial at a time
    life.episode(100, True)
    verdict = life.episode(98, True)
    assert verdict.keep and life.settle(verdict) == [] and life.last_good == v1 and life.ready()
    life.take_round()
    v3 = {'policy': FakeAdapter(life.next_version())}
    life.applied(v3)
    life.episode(10, False)
    verdict = life.episode(12, False)
    assert not verdict.keep
    assert life.settle(verdict) == [('policy', v3['policy'], v1['policy'])]   # back to the last good one
    assert life.on_trial == {} and life.last_good == v1


def test_lifecycle_without_judge_keeps_what_was_applied(tmp_path):
    from adawm_planner.core.rollback import AdapterLifecycle
    life = AdapterLifecycle(tmp_path, None)
    adapter = FakeAdapter(life.next_version())
    life.applied({'model': adapter})
    assert life.last_good == {'model': adapter} and life.on_trial == {} and life.episode(1.0, True) is None
