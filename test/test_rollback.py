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
