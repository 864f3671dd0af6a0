"""Reward terms, termination, TTC and ego features on hand-made scenes."""
import numpy as np
import pytest

from adawm_planner.core import metrics
from adawm_planner.core.scene import Agents, Ego, Scene

ROUTE = np.stack([np.arange(0, 41, 2.0), np.zeros(21)], 1)   # 40 m straight along +x


def scene(x=0.0, y=0.0, yaw=0.0, speed=4.0, agents=None, collision=False):
    return Scene(lanes=[], route=ROUTE, ego=Ego(x, y, yaw, speed), agents=agents or Agents(), collision=collision)


def test_waypoint_progress_rewarded_once():
    tracker = metrics.RouteTracker(ROUTE)
    p = tracker.update(0.0, 0.0)
    assert p.reached == 0 and p.completion == 0.0
    p = tracker.update(5.1, 0.2)
    assert p.reached == 2 and metrics.reward_terms(scene(5.1, 0.2), p, 4.0)['r_waypoint'] == 4.0
    p = tracker.update(4.0, 0.0)        # backing up earns nothing, and nothing again on return
    assert p.reached == 0
    assert tracker.update(5.2, 0.0).reached == 0
    assert tracker.update(39.0, 0.0).arrived


def test_speed_term_peaks_at_v_des_and_punishes_sideways_motion():
    tracker = metrics.RouteTracker(ROUTE)
    p = tracker.update(1.0, 0.0)
    r = {v: metrics.reward_terms(scene(1.0, speed=v), p, 4.0)['r_speed'] for v in (0.0, 2.0, 4.0, 6.0)}
    assert r[4.0] == pytest.approx(2.0) and r[0.0] == pytest.approx(0.0) and r[2.0] < r[4.0] and r[6.0] < r[4.0]
    assert metrics.reward_terms(scene(1.0, yaw=0.5, speed=4.0), p, 4.0)['r_speed'] < r[4.0]


def test_penalty_signs():
    tracker = metrics.RouteTracker(ROUTE)
    p = tracker.update(10.0, 0.3)
    terms = metrics.reward_terms(scene(10.0, 0.3), p, 4.0)
    assert terms['r_out_of_lane'] == 0.0 and terms['r_collision'] == 0.0 and terms['r_destination'] == 0.0
    p = tracker.update(10.0, -1.5)
    assert p.lateral == pytest.approx(-1.5)
    assert metrics.reward_terms(scene(10.0, -1.5), p, 4.0)['r_out_of_lane'] == pytest.approx(-3.0)
    assert metrics.reward_terms(scene(10.0, -1.5, speed=5.0, collision=True), p, 4.0)['r_collision'] == -150.0
    p = tracker.update(39.5, 0.0)
    assert metrics.reward_terms(scene(39.5), p, 4.0)['r_destination'] == 20.0


def test_termination_reasons():
    tracker = metrics.RouteTracker(ROUTE)
    ok = tracker.update(10.0, 0.0)
    assert not any(metrics.termination(scene(10.0), ok, 5, 100).values())
    assert metrics.termination(scene(10.0), ok, 100, 100)['timeout']
    assert metrics.termination(scene(10.0, collision=True), ok, 100, 100) == \
        {'collision': True, 'success': False, 'off_route': False, 'timeout': False}
    assert metrics.termination(scene(10.0, 3.5), tracker.update(10.0, 3.5), 5, 100)['off_route']
    assert metrics.termination(scene(39.5), tracker.update(39.5, 0.0), 5, 100)['success']


def car(x, y, vx, vy=0.0, yaw=0.0):
    return [x, y, yaw, vx, vy, 4.5, 2.0]


def test_ttc_on_hand_made_scenes():
    assert metrics.ttc(scene(speed=10.0)) == metrics.TTC_CAP
    ahead = Agents.from_rows([car(20.0, 0.0, 5.0)])
    assert metrics.ttc(scene(speed=10.0, agents=ahead)) == pytest.approx(4.0)
    beside = Agents.from_rows([car(20.0, 3.5, 0.0)])       # next lane
    behind = Agents.from_rows([car(-10.0, 0.0, 20.0)])
    far = Agents.from_rows([car(150.0, 0.0, 0.0)])
    for agents in (beside, behind, far):
        assert metrics.ttc(scene(speed=10.0, agents=agents)) == metrics.TTC_CAP
    several = Agents.from_rows([car(20.0, 0.0, 5.0), car(12.0, 0.5, 8.0), car(30.0, 0.0, 0.0)])
    assert metrics.ttc(scene(speed=10.0, agents=several)) == pytest.approx(min(20 / 5, np.hypot(12, 0.5) / 2, 30 / 10))
    # heading matters: ego driving north, car north of it
    north = Agents.from_rows([car(0.0, 20.0, 0.0, 0.0, np.pi / 2)])
    assert metrics.ttc(scene(yaw=np.pi / 2, speed=10.0, agents=north)) == pytest.approx(2.0)


def test_ego_features_order_and_type():
    tracker = metrics.RouteTracker(ROUTE)
    p = tracker.update(10.0, 1.0)
    s = scene(10.0, 1.0, yaw=0.2, speed=3.0)
    s.ego.acceleration = -1.0
    f = metrics.ego_features(s, (0.5, -0.3, 0.0), p)
    assert f.dtype == np.float32 and f.shape == (len(metrics.EGO_FEATURES),)
    values = dict(zip(metrics.EGO_FEATURES, f))
    assert values['speed'] == 3.0 and values['acceleration'] == -1.0 and values['throttle'] == 0.5
    assert values['steer'] == pytest.approx(-0.3) and values['brake'] == 0.0
    assert values['route_heading_error'] == pytest.approx(-0.2) and values['lateral_offset'] == pytest.approx(1.0)
    assert values['route_completion'] == pytest.approx(0.25)
