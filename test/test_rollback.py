"""The adapter judge: keep what drives at least as well, roll back what drives worse."""
import pytest

from adawm_planner.core.rollback import AdapterJudge


def drive(judge, returns, success=False):
    verdicts = [judge.episode(r, success) for r in returns]
    return [v for v in verdicts if v is not None]


def test_worse_adapter_is_rolled_back_better_is_kept():
    judge = AdapterJudge(episodes=3, margin=1.64)
    assert not judge.has_bar()
    assert drive(judge, [100, 110, 90]) == [] and judge.has_bar()
    judge.applied(1)
    [verdict] = drive(judge, [60, 70, 65])
    assert not verdict.keep and verdict.version == 1 and 'fell from 100.0 to 65.0' in verdict.reason
    # after a rollback the next adapter waits for fresh episodes of the restored state, which join the bar
    assert not judge.has_bar()
    drive(judge, [100, 104, 96] * 2)
    judge.applied(2)
    [verdict] = drive(judge, [70, 72, 75])
    assert not verdict.keep and 'fell from 100.0 to 72.3 over 3 episodes' in verdict.reason
    drive(judge, [95, 105, 100] * 4)
    judge.applied(3)
    assert drive(judge, [95, 100, 99])[0].keep


def test_rollbacks_in_a_row_wait_longer_for_the_next_trial():
    """Each rollback in a row doubles the episodes of the restored state before the next trial (a finetuner
    whose adapters keep failing would otherwise drive half the time with them), up to 8 times; a kept
    adapter resets it."""
    judge = AdapterJudge(episodes=2, margin=1.64)
    waits = []
    drive(judge, [100, 100], success=True)
    for version in range(1, 7):
        judge.applied(version)
        assert not drive(judge, [-100, -100])[0].keep
        wait = 0
        while not judge.has_bar():
            judge.episode(100, True)
            wait += 1
        waits.append(wait)
    assert waits == [4, 8, 16, 16, 16, 16]
    judge.applied(7)
    assert drive(judge, [100, 100], success=True)[0].keep
    drive(judge, [100, 100], success=True)
    assert judge.has_bar()


def test_traffic_noise_is_not_a_worse_adapter():
    """Returns that differ by the episodes' traffic (a crash costs ~150) are judged in standard errors: a
    stretch of the same spread is kept, one far below it is not."""
    judge = AdapterJudge(episodes=4, margin=1.64)
    drive(judge, [300, -150, 250, 20])
    judge.applied(1)
    assert drive(judge, [-120, 280, -90, 40])[0].keep      # mean 27.5 against 105, well within the spread
    drive(judge, [300, -150, 250, 20])
    judge.applied(2)
    verdict = drive(judge, [-150, -140, -160, -150])[0]
    assert not verdict.keep and 'standard errors below the 4 before' in verdict.reason


def test_an_adapter_that_stops_short_is_rolled_back():
    """The car that stops short of the goal keeps most of its return: arrivals are judged too (Fisher)."""
    judge = AdapterJudge(episodes=5, margin=1.64)
    for r in [300, 320, -150, 310, 290, 305, 20, 315, 300, 295]:
        judge.episode(r, r > 250)
    judge.applied(1)
    verdicts = [judge.episode(r, False) for r in [200, 190, 210, 185, 205]]   # timeouts: return ~0.65 of arrival
    assert not verdicts[-1].keep and 'arrivals fell from 8 of 10 to 0 of 5' in verdicts[-1].reason
    # the same returns with arrivals as before are kept
    for r in [300, 320, -150, 310, 290, 305, 20, 315, 300, 295]:
        judge.episode(r, r > 250)
    judge.applied(2)
    assert [judge.episode(r, True) for r in [200, 190, 210, 185, 205]][-1].keep


def test_a_broken_adapter_is_rolled_back_before_its_trial_ends():
    """Interim looks: against a bar of arrivals, a trial that keeps stopping short is rolled back once that
    is significant at the level divided over the looks — here after 5 of its 8 episodes, not 8."""
    judge = AdapterJudge(episodes=8, margin=1.64)
    bar = [(r, r > 250) for r in [300, 320, -150, 310, 290, 305, 20, 315]]
    for r, arrived in bar * 3:
        judge.episode(r, arrived)
    judge.applied(1)
    verdicts = [judge.episode(r, False) for r in [200, 190, 210, 185, 205]]   # 0 of 4 vs 18 of 24: p 0.010
    assert verdicts[:4] == [None] * 4 and not verdicts[4].keep
    assert 'from 18 of 24 to 0 of 5 episodes' in verdicts[4].reason and judge.on_trial is None
    # a harmless trial's early failures are not significant at the interim level: it runs to its verdict
    for r, arrived in bar * 4:
        judge.episode(r, arrived)
    judge.applied(2)
    verdicts = [judge.episode(r, arrived) for r, arrived in [(-150, False), (20, False)] + bar[:6]]
    assert verdicts[:-1] == [None] * 7 and verdicts[-1].keep


def test_fewer_arrivals_p_is_fishers_exact_test():
    from adawm_planner.core.rollback import fewer_arrivals_p
    assert fewer_arrivals_p(0, 5, 9, 15) == pytest.approx(462 / 15504)     # C(11,5) / C(20,5)
    assert fewer_arrivals_p(5, 5, 9, 15) == pytest.approx(1.0)
    assert fewer_arrivals_p(0, 3, 0, 6) == pytest.approx(1.0)               # nothing to fall from


def test_a_kept_adapters_trial_is_not_its_bar():
    """The episodes that passed a verdict are not the next bar (they passed because they were good): a kept
    adapter is judged against what it drives after its verdict."""
    judge = AdapterJudge(episodes=2, margin=1.64)
    drive(judge, [10, 12])
    judge.applied(1)
    assert drive(judge, [500, 510])[0].keep
    assert not judge.has_bar()
    drive(judge, [20, 22])
    judge.applied(2)
    assert drive(judge, [19, 23])[0].keep      # against 20 and 22, not against the lucky 500 and 510


def test_superseded_adapter_gets_no_verdict():
    judge = AdapterJudge(episodes=2, margin=1.64)
    drive(judge, [10, 10])
    judge.applied(5)
    drive(judge, [1])
    judge.applied(6)
    [verdict] = drive(judge, [10, 10])
    assert verdict.version == 6


def test_superseded_before_any_episode_keeps_the_bar():
    judge = AdapterJudge(episodes=2, margin=1.64)
    drive(judge, [10, 10])
    judge.applied(7)
    judge.applied(8)
    [verdict] = drive(judge, [1, 1])
    assert verdict.version == 8 and not verdict.keep and 'fell from 10.0 to 1.0' in verdict.reason


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        AdapterJudge(episodes=0, margin=1.64)


class FakeAdapter:
    """Stands in for lora.Adapter where only the version matters (the lifecycle never reads tensors)."""
    def __init__(self, version):
        self.meta = type('Meta', (), {'version': version})()


def test_lifecycle_versions_are_never_reused_across_restarts(tmp_path):
    from adawm_planner.core.rollback import AdapterLifecycle
    first = AdapterLifecycle(tmp_path, AdapterJudge(episodes=2, margin=1.64))
    assert [first.next_version(), first.next_version()] == [1, 2]
    again = AdapterLifecycle(tmp_path, None)
    assert again.next_version() == 3


def test_lifecycle_trial_keep_and_roll_back(tmp_path):
    from adawm_planner.core.rollback import AdapterLifecycle
    life = AdapterLifecycle(tmp_path, AdapterJudge(episodes=2, margin=1.64))
    assert not life.ready()
    life.trained(['policy'])
    life.trained(['model', 'policy'])
    assert not life.ready()                         # no bar yet: nothing driven to judge an adapter against
    for r in (100, 100):
        assert life.episode(r, True) is None
    assert life.ready() and life.take_round() == ['model', 'policy'] and not life.ready()
    v1 = {'model': FakeAdapter(life.next_version()), 'policy': FakeAdapter(life.next_version())}
    life.applied(v1)
    life.trained(['policy'])
    assert not life.ready()                         # one round on trial at a time
    life.episode(100, True)
    verdict = life.episode(98, True)
    assert verdict.keep and life.settle(verdict) == [] and life.last_good == v1 and not life.ready()
    for r in (99, 101):                             # the kept round's own bar
        life.episode(r, True)
    assert life.ready()
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


def test_a_drifting_chain_falls_through_the_floor():
    """Each adapter no worse than the one before beyond noise, yet together well below no adapter at all: the
    floor (the unadapted planner's episodes) catches the chain, and the verdict goes back to the base."""
    judge = AdapterJudge(episodes=4, margin=1.64)
    drive(judge, [100] * 4, success=True)                   # the unadapted planner: 4 arrivals of 4
    arrivals_per_trial = [3, 3, 2, 2, 1, 1, 0]                # each step down is within the noise of 4 episodes
    verdicts = []
    for version, arrivals in enumerate(arrivals_per_trial, start=1):
        judge.applied(version)
        trial = [judge.episode(100, i < arrivals) for i in range(4)]
        verdicts.append(trial[-1])
        if verdicts[-1].to_base:
            break
        for i in range(4):                                  # the kept state's own bar, driven like its trial
            judge.episode(100, i < arrivals)
    assert all(v.keep for v in verdicts[:-1]) and len(verdicts) > 1
    last = verdicts[-1]
    assert not last.keep and last.to_base and 'worse than none' in last.reason and 'driven without adapters' in last.reason
    assert not judge.in_force and not judge.has_bar()
    # against its predecessor's bar alone (4 episodes) the step that was caught is within the noise
    from adawm_planner.core.rollback import fewer_arrivals_p
    step = len(verdicts) - 1
    assert step >= 2 and fewer_arrivals_p(arrivals_per_trial[step], 4, arrivals_per_trial[step - 1], 4) > 0.05


def test_a_rejected_trial_does_not_count_against_the_adapters_restored():
    judge = AdapterJudge(episodes=2, margin=1.64)
    drive(judge, [100, 100], success=True)
    judge.applied(1)
    assert drive(judge, [100, 100], success=True)[0].keep
    drive(judge, [100, 100], success=True)
    judge.applied(2)
    [verdict] = drive(judge, [-100, -100])
    assert not verdict.keep and not verdict.to_base
    assert list(judge.adapted) == [(100, True)] * 4


def test_lifecycle_back_to_the_base_drops_every_adapter(tmp_path):
    from adawm_planner.core.rollback import AdapterLifecycle, Verdict
    life = AdapterLifecycle(tmp_path, AdapterJudge(episodes=2, margin=1.64))
    model, policy = FakeAdapter(1), FakeAdapter(2)
    life.last_good = {'model': model}
    life.on_trial = {'policy': policy}
    rollbacks = life.settle(Verdict(2, False, 'worse than none', to_base=True))
    assert rollbacks == [('model', model, None), ('policy', policy, None)]
    assert life.last_good == {} and life.on_trial == {}
