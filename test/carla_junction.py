"""A CARLA-style OpenDRIVE junction for tests and benchmarks: four two-lane arms (lines) and twelve connecting
roads inside a junction (a straight line and two arcs from every arm), right-hand traffic, as CARLA towns
describe their intersections. `carla.Map(name, xodr)` parses it offline. And `record`, a drive on any map
written as `adawm record` writes it."""
import math

import numpy as np


def _road(road_id, junction, x, y, heading, length, curvature, lanes, predecessor=None, successor=None):
    geometry = ('<line/>' if curvature == 0 else f'<arc curvature="{curvature:.8f}"/>')
    links = ''.join(f'<{kind} elementType="{etype}" elementId="{eid}"{cp}/>'
                    for kind, link in (('predecessor', predecessor), ('successor', successor)) if link
                    for etype, eid, cp in [link])
    mark = '<roadMark sOffset="0" type="{}" weight="standard" color="standard" width="0.15"/>'
    lane = lambda lid, inner: (f'<lane id="{lid}" type="driving" level="false"><link/>'
                               f'<width sOffset="0" a="3.5" b="0" c="0" d="0"/>{mark.format(inner)}</lane>')
    left = f'<left>{lane(1, "solid")}</left>' if lanes == 2 else ''
    return (f'<road name="Road {road_id}" length="{length:.6f}" id="{road_id}" junction="{junction}">'
            f'<link>{links}</link><planView><geometry s="0" x="{x:.6f}" y="{y:.6f}" hdg="{heading:.8f}" '
            f'length="{length:.6f}">{geometry}</geometry></planView>'
            f'<lanes><laneSection s="0">{left}<center><lane id="0" type="none" level="false">'
            f'{mark.format("broken" if lanes == 2 else "none")}</lane></center>'
            f'<right>{lane(-1, "solid")}</right></laneSection></lanes></road>')


def junction_xodr(half: float = 10.0, arm: float = 60.0) -> str:
    """Arm k (k = 0..3) leaves the junction box at angle 90°·k; its lane -1 drives away from the junction,
    lane 1 towards it. Connecting road 100 + 3k + m turns from arm k into arm k + 1 + m (right, straight, left)."""
    roads, connections = [], []
    theta = [math.radians(90 * k) for k in range(4)]
    for k in range(4):
        roads.append(_road(k + 1, -1, half * math.cos(theta[k]), half * math.sin(theta[k]), theta[k], arm, 0.0, 2))
    for k in range(4):
        for m in range(3):
            j = (k + 1 + m) % 4
            start, end = (half * math.cos(theta[k]), half * math.sin(theta[k])), (half * math.cos(theta[j]), half * math.sin(theta[j]))
            heading = theta[k] + math.pi
            turn = (theta[j] - heading + math.pi) % (2 * math.pi) - math.pi   # -90° right, 0 straight, +90° left
            chord = math.hypot(end[0] - start[0], end[1] - start[1])
            if abs(turn) < 1e-9:
                length, curvature = chord, 0.0
            else:
                radius = chord / (2 * math.sin(abs(turn) / 2))
                length, curvature = radius * abs(turn), math.copysign(1 / radius, turn)
            road_id = 100 + 3 * k + m
            roads.append(_road(road_id, 1, start[0], start[1], heading, length, curvature, 1,
                               predecessor=('road', k + 1, ' contactPoint="start"'),
                               successor=('road', j + 1, ' contactPoint="start"')))
            connections.append(f'<connection id="{len(connections)}" incomingRoad="{k + 1}" connectingRoad="{road_id}" '
                               f'contactPoint="start"><laneLink from="1" to="-1"/></connection>')
    header = '<header revMajor="1" revMinor="4" name="junction" version="1.00" north="0" south="0" east="0" west="0"/>'
    junction = f'<junction id="1" name="junction">{"".join(connections)}</junction>'
    return f'<?xml version="1.0" standalone="yes"?><OpenDRIVE>{header}{"".join(roads)}{junction}</OpenDRIVE>'


def record(path, map_xodr, route, seconds, rate=20.0, agents=()):
    """A drive along `route` (map frame, (M, 2)) at 5 m/s with `agents` (list of (route, speed)) around it."""
    from carla_msgs.msg import CarlaEgoVehicleControl
    from rclpy.serialization import serialize_message
    from rosbags.rosbag2 import StoragePlugin, Writer
    from std_msgs.msg import String

    from adawm_planner.core.scene import Agents, Ego
    from adawm_planner.nodes import convert
    from adawm_planner.nodes.bag import typestore_with

    types = {'/carla/map': 'std_msgs/msg/String', '/carla/ego_vehicle/waypoints': 'nav_msgs/msg/Path',
             '/carla/ego_vehicle/odometry': 'nav_msgs/msg/Odometry',
             '/carla/ego_vehicle/objects': 'derived_object_msgs/msg/ObjectArray',
             '/carla/ego_vehicle/vehicle_control_cmd': 'carla_msgs/msg/CarlaEgoVehicleControl'}
    store = typestore_with(set(types.values()))
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(route, axis=0), axis=1))])

    def at(polyline, s):
        s = s % arc_of(polyline)[-1]
        a = arc_of(polyline)
        i = int(np.clip(np.searchsorted(a, s) - 1, 0, len(polyline) - 2))
        p, q = polyline[i], polyline[i + 1]
        t = (s - a[i]) / max(a[i + 1] - a[i], 1e-9)
        return p + t * (q - p), math.atan2(q[1] - p[1], q[0] - p[0])

    arcs = {}
    arc_of = lambda poly: arcs.setdefault(id(poly), np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(poly, axis=0), axis=1))]))
    with Writer(path, version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {t: writer.add_connection(t, m, typestore=store) for t, m in types.items()}
        writer.write(conns['/carla/map'], 1, serialize_message(String(data=map_xodr)))
        writer.write(conns['/carla/ego_vehicle/waypoints'], 1, serialize_message(convert.route_msg(route, 0.0)))
        for i in range(int(seconds * rate)):
            stamp = (i + 1) / rate
            (x, y), yaw = at(route, min(5.0 * stamp, arc[-1] - 0.1))
            rows = []
            for poly, speed in agents:
                (ax, ay), ayaw = at(poly, speed * stamp)
                rows.append((ax, ay, ayaw, speed * math.cos(ayaw), speed * math.sin(ayaw), 4.5, 2.0))
            ns = int(stamp * 1e9)
            writer.write(conns['/carla/ego_vehicle/objects'], ns,
                         serialize_message(convert.objects_msg(Agents.from_rows(rows), stamp)))
            writer.write(conns['/carla/ego_vehicle/odometry'], ns,
                         serialize_message(convert.odometry_msg(Ego(x, y, yaw, 5.0), stamp, 'ego_vehicle')))
            control = CarlaEgoVehicleControl(throttle=0.3)
            control.header.stamp = convert.time_msg(stamp)
            writer.write(conns['/carla/ego_vehicle/vehicle_control_cmd'], ns + 1000, serialize_message(control))
    return path
