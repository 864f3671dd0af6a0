"""A fixed scripted driver, IDM-like: pure pursuit along the route, IDM on the nearest car in its path.

It reacts only to cars already in its path (no yielding to crossing traffic, no prediction), like a
plain car-following model. It measures the tasks, not the agent: a shift pair is real when its
success or collision rate changes.
"""
from __future__ import annotations

import numpy as np

from adawm_planner.core.metrics import RouteTracker
from adawm_planner.core.scene import Scene
from adawm_planner.core.actions import MAX_STEER_ANGLE, PEDAL_ACCELERATION

WHEELBASE_HALF = 2.5          # m: highway-env's bicycle turns about half the car length
PATH_AHEAD = 30.0             # m of route searched for a leading car
PATH_HALF_WIDTH = 2.0         # m: a car whose centre is this close to the path is in it
TIME_GAP, MIN_GAP, COMFORT_BRAKE, DELTA = 1.5, 4.0, 3.0, 4   # IDM parameters


def scripted_control(scene: Scene, tracker: RouteTracker, v_des: float) -> tuple[float, float, float]:
    ego = scene.ego
    c, s = np.cos(ego.yaw), np.sin(ego.yaw)
    lookahead = max(4.0, 1.2 * ego.speed)
    target = _point_at(tracker, tracker.s + lookahead)
    dx, dy = target[0] - ego.x, target[1] - ego.y
    alpha = np.arctan2(-s * dx + c * dy, c * dx + s * dy)
    curvature = 2 * np.sin(alpha) / lookahead                      # + = turn left
    beta = np.arcsin(np.clip(curvature * WHEELBASE_HALF, -1, 1))
    steer = float(np.clip(-np.arctan(2 * np.tan(beta)) / MAX_STEER_ANGLE, -1, 1))   # CARLA: + steers right

    acc = PEDAL_ACCELERATION * (1 - (ego.speed / v_des) ** DELTA)
    lead = _leader(scene, tracker)
    if lead is not None:
        gap, lead_speed = lead
        wanted = MIN_GAP + ego.speed * TIME_GAP + ego.speed * (ego.speed - lead_speed) / (2 * np.sqrt(PEDAL_ACCELERATION * COMFORT_BRAKE))
        acc -= PEDAL_ACCELERATION * (max(wanted, 0.0) / max(gap, 0.1)) ** 2
    acc = float(np.clip(acc, -PEDAL_ACCELERATION, PEDAL_ACCELERATION))
    return max(acc, 0.0) / PEDAL_ACCELERATION, steer, max(-acc, 0.0) / PEDAL_ACCELERATION


def _point_at(tracker: RouteTracker, s: float) -> np.ndarray:
    """The route point at arc length s, extended straight past its end."""
    beyond = max(s - tracker.length, 0.0)
    s = np.clip(s, 0.0, tracker.length)
    point = np.array([np.interp(s, tracker.arc, tracker.route[:, 0]), np.interp(s, tracker.arc, tracker.route[:, 1])])
    return point + tracker.seg_dir[-1] * beyond


def _leader(scene: Scene, tracker: RouteTracker):
    """(bumper gap, speed along the path) of the nearest car in the path ahead, or None."""
    agents = scene.agents
    if not len(agents):
        return None
    stations = np.arange(1.0, PATH_AHEAD, 1.0)
    path = np.stack([_point_at(tracker, tracker.s + d) for d in stations])            # (P, 2)
    distance = np.hypot(agents.x[:, None] - path[None, :, 0], agents.y[:, None] - path[None, :, 1])   # (K, P)
    inside = distance.min(1) < PATH_HALF_WIDTH
    if not inside.any():
        return None
    station = stations[distance.argmin(1)]
    k = int(np.argmin(np.where(inside, station, np.inf)))
    heading = _point_at(tracker, tracker.s + station[k] + 0.5) - _point_at(tracker, tracker.s + station[k] - 0.5)
    speed_along = float(agents.vx[k] * heading[0] + agents.vy[k] * heading[1])
    return station[k] - (scene.ego.length + agents.length[k]) / 2, speed_along


def run_episode(env, seed: int) -> dict:
    """One episode of the scripted driver on a DrivingEnv (env.unwrapped); returns the final info."""
    env.reset(seed=seed)
    while True:
        control = scripted_control(env.scene(), env.tracker, env.task['v_des'])
        _, _, terminated, truncated, info = env.step_control(*control)
        if terminated or truncated:
            return info
