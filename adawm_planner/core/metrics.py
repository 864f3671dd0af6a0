"""Reward terms, termination, TTC and the ego feature vector, computed from a Scene.

After CarDreamer: +2 per route waypoint reached; speed 0.5·(v_des − |v∥ − v_des| − 2·min(v⊥, 0.5));
collision −30·|v|; out of lane −3·(d − 0.5) when the lateral distance d to the route exceeds 0.5 m;
+20 at the destination. The simulator and the ROS nodes both call these functions.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from adawm_planner.core.scene import Scene

WAYPOINT_REWARD = 2.0
COLLISION_SCALE = 30.0
OUT_OF_LANE_SCALE = 3.0
LANE_TOLERANCE = 0.5        # m of lateral distance before the out-of-lane penalty starts
DESTINATION_REWARD = 20.0
OFF_ROUTE_DISTANCE = 3.0    # m from the route: the episode ends (CarDreamer: 3 m from the next waypoint)
DESTINATION_RADIUS = 2.0    # m before the last waypoint counts as arrived
TTC_CAP = 100.0             # s when no vehicle is on a collision course
TTC_RANGE = 100.0           # m ahead searched for TTC
SEARCH_WINDOW = 20          # route segments searched ahead of the last projection (routes never jump)

EGO_FEATURES = ('speed', 'acceleration', 'steer', 'throttle', 'brake', 'route_heading_error',
                'lateral_offset', 'next_waypoint_distance', 'route_completion')


@dataclass
class RouteProgress:
    """Where the ego is along the route after an update."""
    reached: int            # waypoints newly reached by this update
    lateral: float          # signed distance to the route, + = ego left of it (m)
    heading: float          # route direction at the projection (rad, map frame)
    distance_to_next: float
    completion: float       # arc length travelled / route length, 0..1
    arrived: bool


class RouteTracker:
    """Follows the ego's projection along a route polyline; waypoints count as reached once passed."""

    def __init__(self, route: np.ndarray):
        self.route = np.asarray(route, np.float64)
        segments = np.diff(self.route, axis=0)
        self.seg_len = np.maximum(np.linalg.norm(segments, axis=1), 1e-9)
        self.seg_dir = segments / self.seg_len[:, None]
        self.arc = np.concatenate([[0.0], np.cumsum(self.seg_len)])   # arc length at each waypoint
        self.length = float(self.arc[-1])
        self.segment = 0          # segment of the last projection
        self.reached = 1          # waypoints passed (the first is the start)
        self.s = 0.0

    def update(self, x: float, y: float) -> RouteProgress:
        lo, hi = self.segment, min(self.segment + SEARCH_WINDOW, len(self.seg_len))
        rel = np.array([x, y]) - self.route[lo:hi]
        along = np.clip(np.einsum('ij,ij->i', rel, self.seg_dir[lo:hi]), 0.0, self.seg_len[lo:hi])
        foot = self.route[lo:hi] + self.seg_dir[lo:hi] * along[:, None]
        dist = np.linalg.norm(np.array([x, y]) - foot, axis=1)
        best = int(np.argmin(dist))
        self.segment = lo + best
        direction = self.seg_dir[self.segment]
        offset = np.array([x, y]) - foot[best]
        lateral = float(direction[0] * offset[1] - direction[1] * offset[0])
        self.s = max(self.s, float(self.arc[self.segment] + along[best]))
        passed = int(np.searchsorted(self.arc, self.s + 1e-9, side='right'))
        newly, self.reached = max(passed - self.reached, 0), max(self.reached, passed)
        next_index = min(self.reached, len(self.route) - 1)
        return RouteProgress(newly, lateral, float(np.arctan2(direction[1], direction[0])),
                             float(np.hypot(*(self.route[next_index] - [x, y]))),
                             self.s / max(self.length, 1e-9), self.length - self.s < DESTINATION_RADIUS)


def reward_terms(scene: Scene, progress: RouteProgress, v_des: float) -> dict[str, float]:
    ego = scene.ego
    v_along = ego.speed * np.cos(ego.yaw - progress.heading)
    v_across = abs(ego.speed * np.sin(ego.yaw - progress.heading))
    d = abs(progress.lateral)
    return {
        'r_waypoint': WAYPOINT_REWARD * progress.reached,
        'r_speed': float(0.5 * (v_des - abs(v_along - v_des) - 2.0 * min(v_across, 0.5))),
        'r_collision': -COLLISION_SCALE * abs(ego.speed) if scene.collision else 0.0,
        'r_out_of_lane': -OUT_OF_LANE_SCALE * (d - LANE_TOLERANCE) if d > LANE_TOLERANCE else 0.0,
        'r_destination': DESTINATION_REWARD if progress.arrived else 0.0,
    }


def termination(scene: Scene, progress: RouteProgress, steps: int, max_steps: int) -> dict[str, bool]:
    """Outcome flags; at most one is True, in priority collision > success > off_route > timeout."""
    collision = bool(scene.collision)
    success = not collision and progress.arrived
    off_route = not (collision or success) and abs(progress.lateral) > OFF_ROUTE_DISTANCE
    timeout = not (collision or success or off_route) and steps >= max_steps
    return {'collision': collision, 'success': success, 'off_route': off_route, 'timeout': timeout}


def episode_end(scene: Scene, progress: RouteProgress) -> str | None:
    """The outcome that ends an episode at this step of a recorded drive (no timeout offline: a recording
    knows no step limit), or None."""
    outcome = termination(scene, progress, 0, max_steps=1)
    return next((name for name in ('collision', 'success', 'off_route') if outcome[name]), None)


def ttc(scene: Scene, lane_half_width: float = 1.75) -> float:
    """CarDreamer's time to collision: min over vehicles in the ego's lane (|lateral| < half a lane in the
    ego frame), ahead, within 100 m, of distance / |relative speed| along the ego's heading; TTC_CAP if none."""
    ego, agents = scene.ego, scene.agents
    if not len(agents):
        return TTC_CAP
    c, s = np.cos(ego.yaw), np.sin(ego.yaw)
    dx, dy = agents.x - ego.x, agents.y - ego.y
    forward, left = c * dx + s * dy, -s * dx + c * dy
    relative = ego.speed - (c * agents.vx + s * agents.vy)
    mask = (forward > 0) & (forward < TTC_RANGE) & (np.abs(left) < lane_half_width)
    if not mask.any():
        return TTC_CAP
    times = np.hypot(dx, dy)[mask] / np.maximum(np.abs(relative[mask]), 1e-6)
    return float(min(times.min(), TTC_CAP))


def ego_features(scene: Scene, control: tuple[float, float, float], progress: RouteProgress) -> np.ndarray:
    """The "ego" observation, float32 in the order of EGO_FEATURES. control = (throttle, steer, brake)."""
    throttle, steer, brake = control
    heading_error = (progress.heading - scene.ego.yaw + np.pi) % (2 * np.pi) - np.pi
    return np.array([scene.ego.speed, scene.ego.acceleration, steer, throttle, brake, heading_error,
                     progress.lateral, progress.distance_to_next, progress.completion], np.float32)
