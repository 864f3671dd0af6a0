"""The planner's guards without DDS: the hold after an input fault, and the anytime budget's bookkeeping."""
import pytest

from adawm_planner.core.guard import FaultHold, PlanBudget


def test_a_fault_holds_until_inputs_have_been_clean_long_enough():
    hold = FaultHold(0.5)
    assert hold.check(1.0, None) is None                       # nothing happened: plan
    assert hold.check(1.05, 'odometry not finite') == 'odometry not finite'
    held = [hold.check(1.10 + 0.05 * i, None) for i in range(10)]
    assert all(r and r.startswith('holding') and 'odometry not finite' in r for r in held)
    assert hold.check(1.60, None) is None                      # 0.5 s of clean frames since 1.10
    assert hold.check(1.65, None) is None


def test_interleaved_faults_restart_the_hold():
    hold = FaultHold(0.5)
    for i in range(20):   # bad and good messages alternating: never a frame to plan on
        stamp = 0.05 * i
        assert hold.check(stamp, 'not finite' if i % 2 else None) is not None or i == 0
    hold.fault('inputs are stale')                             # the watchdog's stop counts too
    assert hold.check(2.0, None).startswith('holding') and hold.check(2.5, None) is None


def test_the_budget_feeds_back_what_the_planner_measured():
    budget = PlanBudget(0.035)
    assert budget.deadline(None) is None and budget.deadline(10.0) == pytest.approx(10.035)
    budget.record({'horizon': 15, 'fallback': False, 'step_seconds': 0.002, 'score_seconds': 0.0004})
    assert budget.step_estimate == 0.002 and budget.score_estimate == 0.0004
    budget.record({'horizon': 0, 'fallback': True, 'step_seconds': None, 'score_seconds': None})
    assert budget.step_estimate == pytest.approx(0.0018) and budget.fallbacks == 1   # lowered, not frozen
    assert budget.score_estimate == 0.0004
    assert budget.report() == {'budget_ms': '35', 'plan_fallbacks': '1', 'afforded_horizon_p50': '8',
                               'afforded_horizon_min': '0'}
    assert PlanBudget(0.0).deadline(10.0) is None               # 0: no deadline


def test_the_frame_log_counts_frames_that_came_and_went_unanswered():
    from adawm_planner.core.guard import FrameLog
    log = FrameLog()
    for stamp in (0.05, 0.10, 0.15, 0.30, 0.35):   # 0.20 and 0.25 never answered
        log.record(stamp, 0.004)
    report = log.report()
    assert (report['frames'], report['missed_frames'], report['tick_latency_p50_ms']) == ('5', '2', '4.00')
