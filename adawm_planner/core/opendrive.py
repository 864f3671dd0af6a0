"""Lane centre lines <-> OpenDRIVE, the form carla-ros-bridge publishes a map in (/carla/map).

The embedded bridge writes its road network with `to_opendrive`; the planner reads whatever map it is
given — the embedded one or a real CARLA town — with `lanes_from_opendrive`, which parses through the
`carla` client's offline `carla.Map(name, xodr)` (no server needed). Both sides use the ROS map frame,
which for OpenDRIVE is its own inertial frame: CARLA negates y on the way in and carla-ros-bridge negates
it again on the way out.

Writing: each lane becomes one road whose reference line is the lane's left boundary, drawn as straight
segments between the polyline's points, with a single driving lane (id -1) of the lane's width on its
right, so the lane's centre is exactly the given centre line (up to the polyline's own resolution).
Painted lines travel as OpenDRIVE road marks: the centre lane's mark is the lane's left line, lane -1's
own mark its right line.
"""
from __future__ import annotations

import math
from xml.sax.saxutils import quoteattr

import numpy as np

from adawm_planner.core.scene import Lane


def _mark(painted: bool) -> str:
    kind = 'solid' if painted else 'none'
    return f'<roadMark sOffset="0" type="{kind}" weight="standard" color="standard" width="0.15"/>'


def to_opendrive(lanes: list[Lane], name: str = 'adawm_embedded') -> str:
    """Lanes (map frame, metres) as an OpenDRIVE 1.4 document."""
    roads = []
    for road_id, lane in enumerate(lanes, start=1):
        centre, width = _dedupe(np.asarray(lane.center, dtype=np.float64)), lane.width
        if len(centre) < 2 or not width > 0:
            continue
        left = centre + _left_normals(centre) * (width / 2)
        geometries, s = [], 0.0
        for (x0, y0), (x1, y1) in zip(left[:-1], left[1:]):
            length = math.hypot(x1 - x0, y1 - y0)
            if length < 1e-6:
                continue
            geometries.append(f'      <geometry s="{s:.4f}" x="{x0:.4f}" y="{y0:.4f}" '
                              f'hdg="{math.atan2(y1 - y0, x1 - x0):.6f}" length="{length:.4f}"><line/></geometry>')
            s += length
        if not geometries:
            continue
        roads.append('\n'.join([
            f'  <road name="lane{road_id}" length="{s:.4f}" id="{road_id}" junction="-1">',
            '    <link/>',
            '    <planView>', *geometries, '    </planView>',
            '    <lanes>',
            '      <laneSection s="0">',
            f'        <center><lane id="0" type="none" level="false">{_mark(lane.left_marked)}</lane></center>',
            f'        <right><lane id="-1" type="driving" level="false">'
            f'<width sOffset="0" a="{width:.4f}" b="0" c="0" d="0"/>{_mark(lane.right_marked)}</lane></right>',
            '      </laneSection>',
            '    </lanes>',
            '  </road>']))
    header = (f'  <header revMajor="1" revMinor="4" name={quoteattr(name)} version="1.00" '
              f'north="0" south="0" east="0" west="0"/>')
    return '\n'.join(['<?xml version="1.0" standalone="yes"?>', '<OpenDRIVE>', header, *roads, '</OpenDRIVE>'])


def lanes_from_opendrive(xodr: str, spacing: float = 2.0, name: str = 'map') -> list[Lane]:
    """Driving lanes of an OpenDRIVE map in the ROS map frame, sampled every `spacing` metres.

    Raises ValueError when the text is not an OpenDRIVE map carla can read."""
    import carla   # the client library only; parsing needs no server

    if '<OpenDRIVE' not in xodr:
        raise ValueError('map text is not OpenDRIVE (no <OpenDRIVE> element)')
    try:
        town = carla.Map(name, xodr)
        waypoints = town.generate_waypoints(spacing)
    except RuntimeError as exc:
        raise ValueError(f'carla could not parse the OpenDRIVE map: {exc}') from None
    by_lane: dict[tuple[int, int, int], list] = {}
    for wp in waypoints:
        if wp.lane_type == carla.LaneType.Driving:
            by_lane.setdefault((wp.road_id, wp.section_id, wp.lane_id), []).append(wp)
    lanes = []
    for (_, _, lane_id), wps in sorted(by_lane.items()):
        # OpenDRIVE lanes with positive ids run against the road's s direction
        wps.sort(key=lambda wp: wp.s, reverse=lane_id > 0)
        wps.append(_lane_end(wps[-1], spacing))   # generate_waypoints stops short of the lane's end
        centre = np.array([[wp.transform.location.x, -wp.transform.location.y] for wp in wps])
        painted = lambda marking: marking.type != carla.LaneMarkingType.NONE
        lanes.append(Lane.from_center(centre, float(np.median([wp.lane_width for wp in wps])),
                                      left_marked=painted(wps[0].left_lane_marking),
                                      right_marked=painted(wps[0].right_lane_marking)))
    return lanes


def _lane_end(waypoint, spacing: float, iterations: int = 10):
    """The lane's last point, less than `spacing` ahead of its last sampled waypoint (bisection on distance)."""
    key = (waypoint.road_id, waypoint.section_id, waypoint.lane_id)

    def same_lane_ahead(distance):
        return [wp for wp in waypoint.next(distance) if (wp.road_id, wp.section_id, wp.lane_id) == key]

    ahead = same_lane_ahead(spacing)
    if ahead:
        return ahead[0]
    lo, hi, end = 0.0, spacing, waypoint
    for _ in range(iterations):
        mid = (lo + hi) / 2
        ahead = same_lane_ahead(mid)
        if ahead:
            lo, end = mid, ahead[0]
        else:
            hi = mid
    return end


def _dedupe(points: np.ndarray) -> np.ndarray:
    keep = np.ones(len(points), dtype=bool)
    keep[1:] = np.linalg.norm(np.diff(points, axis=0), axis=1) > 1e-6
    return points[keep]


def _left_normals(polyline: np.ndarray) -> np.ndarray:
    """Unit normals pointing left of the direction of travel (counter-clockwise), one per point."""
    tangents = np.gradient(polyline, axis=0)
    tangents /= np.maximum(np.linalg.norm(tangents, axis=1, keepdims=True), 1e-9)
    return np.stack([-tangents[:, 1], tangents[:, 0]], axis=1)
