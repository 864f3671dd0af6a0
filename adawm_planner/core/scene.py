"""Scene: everything the BEV raster and the reward need, as plain numbers in the ROS map frame.

Frame: right-handed, x forward/east, y LEFT, yaw counter-clockwise in radians, metres. Built by the
embedded simulator (sim/scene_source.py) and by the ROS nodes from carla-ros-bridge messages; both paths
end here, so the same rasteriser and reward code serve training and deployment.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

CHUNK_POINTS = 24   # polyline points per culling chunk (~48 m at 2 m spacing): long lanes are culled by piece


@dataclass(eq=False)
class Lane:
    """One lane: centre line and its two boundaries, (N, 2) each, in driving order."""
    center: np.ndarray
    left: np.ndarray
    right: np.ndarray
    width: float
    left_marked: bool = True     # whether a painted line runs along the left / right boundary
    right_marked: bool = True

    @classmethod
    def from_center(cls, center, width, left_marked=True, right_marked=True) -> 'Lane':
        """Boundaries at ±width/2 along the polyline's normal (left = +90° from the driving direction)."""
        center = np.asarray(center, np.float64)
        tangent = np.gradient(center, axis=0) if len(center) > 2 else np.repeat(center[1:] - center[:1], len(center), 0)
        tangent /= np.maximum(np.linalg.norm(tangent, axis=1, keepdims=True), 1e-9)
        normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
        return cls(center, center + normal * width / 2, center - normal * width / 2, float(width),
                   left_marked, right_marked)

    @cached_property
    def chunks(self) -> list[tuple[slice, tuple[float, float, float, float]]]:
        """(index slice, (x_min, y_min, x_max, y_max) incl. width) per piece of the lane; neighbouring
        pieces share a point. Plain floats: culling compares them in Python, faster than numpy here."""
        pieces, n = [], len(self.center)
        for start in range(0, max(n - 1, 1), CHUNK_POINTS):
            index = slice(start, min(start + CHUNK_POINTS + 1, n))
            points = np.concatenate([self.left[index], self.right[index]])
            low, high = points.min(0), points.max(0)
            pieces.append((index, (float(low[0]), float(low[1]), float(high[0]), float(high[1]))))
        return pieces


@dataclass
class Ego:
    x: float
    y: float
    yaw: float
    speed: float
    acceleration: float = 0.0
    length: float = 5.0
    width: float = 2.0


@dataclass
class Agents:
    """Other road users, one entry per vehicle (velocity in the map frame)."""
    x: np.ndarray = field(default_factory=lambda: np.zeros(0))
    y: np.ndarray = field(default_factory=lambda: np.zeros(0))
    yaw: np.ndarray = field(default_factory=lambda: np.zeros(0))
    vx: np.ndarray = field(default_factory=lambda: np.zeros(0))
    vy: np.ndarray = field(default_factory=lambda: np.zeros(0))
    length: np.ndarray = field(default_factory=lambda: np.zeros(0))
    width: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @classmethod
    def from_rows(cls, rows) -> 'Agents':
        """From a (K, 7) array of x, y, yaw, vx, vy, length, width."""
        rows = np.asarray(rows, np.float64).reshape(-1, 7)
        return cls(*(rows[:, i].copy() for i in range(7)))

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class Scene:
    lanes: list[Lane]
    route: np.ndarray          # (M, 2) waypoints the ego should follow, in order
    ego: Ego
    agents: Agents = field(default_factory=Agents)
    collision: bool = False
