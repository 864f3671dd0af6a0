"""highway-env road + vehicles -> Scene in the ROS map frame (y -> -y, yaw -> -yaw, as carla-ros-bridge does)."""
from __future__ import annotations

import numpy as np
from highway_env.road.lane import LineType

from adawm_planner.core.scene import Agents, Ego, Lane, Scene

LANE_SPACING = 2.0   # m between lane centre-line samples
FLIP = np.array([1.0, -1.0])


def lanes_of(network) -> list[Lane]:
    """Every lane of the network as map-frame polylines; built once per road (roads never change)."""
    lanes = []
    for _from, targets in network.graph.items():
        for _to, lane_list in targets.items():
            for lane in lane_list:
                s = np.append(np.arange(0.0, lane.length, LANE_SPACING), lane.length)
                center = np.array([lane.position(t, 0.0) for t in s]) * FLIP
                left_type, right_type = lane.line_types   # highway-env's first line is on the driver's left
                lanes.append(Lane.from_center(center, float(lane.width_at(0.0)),
                                              left_type != LineType.NONE, right_type != LineType.NONE))
    return lanes


def agents_of(road, ego) -> Agents:
    rows = [(v.position[0], -v.position[1], -v.heading, v.velocity[0], -v.velocity[1], v.LENGTH, v.WIDTH)
            for v in road.vehicles if v is not ego]
    rows += [(o.position[0], -o.position[1], -o.heading, 0.0, 0.0, o.LENGTH, o.WIDTH) for o in road.objects]
    return Agents.from_rows(rows)


def scene_of(road, ego, lanes: list[Lane], route: np.ndarray, acceleration: float) -> Scene:
    """route: map-frame waypoints."""
    return Scene(lanes=lanes, route=route,
                 ego=Ego(float(ego.position[0]), float(-ego.position[1]), float(-ego.heading), float(ego.speed),
                         float(acceleration), float(ego.LENGTH), float(ego.WIDTH)),
                 agents=agents_of(road, ego), collision=bool(ego.crashed))
