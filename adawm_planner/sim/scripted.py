"""A fixed scripted driver: pure pursuit along the route, cruise at v_des, brake for predicted conflicts.

It measures the tasks, not the agent: the shift pairs must change its success or collision rate.
"""
from __future__ import annotations

import numpy as np

from adawm_planner.core.metrics import RouteTracker
from adawm_planner.core.scene import Scene
from adawm_planner.sim.envs import MAX_STEER_ANGLE, PEDAL_ACCELERATION

HORIZON = np.arange(0.25, 3.01, 0.25)   # s of constant-velocity prediction
CLEARANCE = (6.0, 2.8)                  # m along / across the ego's path: a predicted car inside this ellipse is a conflict
WHEELBASE_HALF = 2.5                    # m: highway-env's bicycle turns about half the car length


def scripted_control(scene: Scene, tracker: RouteTracker, v_des: float) -> tuple[float, float, float]:
    ego = scene.ego
    c, s = np.cos(ego.yaw), np.sin(ego.yaw)
    lookahead = max(4.0, 1.2 * ego.speed)
    target = _point_at(tracker, tracker.s + lookahead)
    dx, dy = target[0] - ego.x, target[1] - ego.y
    alpha = np.arctan2(-s * dx + c * dy, c * dx + s * dy)
    curvature = 2 * np.sin(alpha) / lookahead                      # + = turn left
    beta = np.arcsin(np.clip(curvature * WHEELBASE_HALF, -1, 1))
    wheel = np.arctan(2 * np.tan(beta))
    steer = float(np.clip(-wheel / MAX_STEER_ANGLE, -1, 1))         # CARLA: + steers right

    speed_target = v_des if not _conflict(scene, tracker, max(ego.speed, 0.5 * v_des)) else 0.0
    acc = float(np.clip(1.5 * (speed_target - ego.speed), -PEDAL_ACCELERATION, PEDAL_ACCELERATION))
    return max(acc, 0.0) / PEDAL_ACCELERATION, steer, max(-acc, 0.0) / PEDAL_ACCELERATION


def _point_at(tracker: RouteTracker, s: float) -> np.ndarray:
    s = np.clip(s, 0.0, tracker.length)
    return np.array([np.interp(s, tracker.arc, tracker.route[:, 0]), np.interp(s, tracker.arc, tracker.route[:, 1])])


def _conflict(scene: Scene, tracker: RouteTracker, speed: float) -> bool:
    agents = scene.agents
    if not len(agents):
        return False
    ego_path = np.stack([_point_at(tracker, tracker.s + speed * t) for t in HORIZON])          # (T, 2)
    ahead = np.stack([_point_at(tracker, tracker.s + speed * t + 1.0) for t in HORIZON]) - ego_path
    heading = ahead / np.maximum(np.linalg.norm(ahead, axis=1, keepdims=True), 1e-9)       # (T, 2)
    others = np.stack([agents.x[None] + agents.vx[None] * HORIZON[:, None],
                       agents.y[None] + agents.vy[None] * HORIZON[:, None]], -1)             # (T, K, 2)
    rel = others - ego_path[:, None]
    along = np.einsum('tkd,td->tk', rel, heading)
    across = rel[..., 1] * heading[:, None, 0] - rel[..., 0] * heading[:, None, 1]
    gap = np.hypot(along / CLEARANCE[0], across / CLEARANCE[1])
    now = np.hypot(agents.x - scene.ego.x, agents.y - scene.ego.y)
    # ignore cars behind us that we are not about to meet (they must brake for us, as in CarDreamer)
    c, s = np.cos(scene.ego.yaw), np.sin(scene.ego.yaw)
    behind = (c * (agents.x - scene.ego.x) + s * (agents.y - scene.ego.y)) < -1.0
    return bool(((gap < 1.0).any(0) & ~(behind & (now < 8.0))).any())


def run_episode(env, seed: int, frames: list | None = None) -> dict:
    """One episode of the scripted driver on a DrivingEnv (env.unwrapped); returns the final info."""
    env.reset(seed=seed)
    v_des = env.spec['v_des']
    while True:
        if frames is not None:
            frames.append(env.render())
        control = scripted_control(env.scene(), env.tracker, v_des)
        _, _, terminated, truncated, info = env.step_control(*control)
        if terminated or truncated:
            if frames is not None:
                frames.append(env.render())
            return info
