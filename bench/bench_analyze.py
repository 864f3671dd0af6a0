"""`adawm analyze` speed: model steps per wall second and real-time factor over two recorded drives — one on
the embedded simulator's own map, one on a CARLA-style OpenDRIVE junction (four arms, sixteen roads with lines
and arcs) — and the command's process start.

    .venv/bin/python bench/bench_analyze.py [--seconds 120] [--checkpoint DIR]

Both drives are written as `adawm record` writes them (rosbag2 + MCAP, 20 Hz frames): odometry, objects,
vehicle status, the command, the map and the route. Prints one row per drive.
"""
import argparse
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'test'))


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


def drives(tmp, seconds):
    from carla_junction import junction_xodr

    from adawm_planner.core.opendrive import lanes_from_opendrive, to_opendrive
    from adawm_planner.sim import default_task, make_env

    env = make_env(default_task(), seed=0)
    env.reset(seed=0)
    scene = env.unwrapped.scene()
    embedded = [(lane.center, 4.0) for lane in scene.lanes[:6]]
    yield 'embedded map (right_turn)', record(tmp / 'embedded', to_opendrive(scene.lanes), scene.route, seconds,
                                              agents=embedded)
    xodr = junction_xodr(arm=80.0)
    lanes = lanes_from_opendrive(xodr)
    longest = max(lanes, key=lambda lane: len(lane.center))
    others = [(lane.center, 6.0) for lane in lanes if lane is not longest][:8]
    yield (f'CARLA-style junction ({len(lanes)} lanes, {sum(len(l.center) for l in lanes)} waypoints)',
           record(tmp / 'junction', xodr, longest.center, seconds, agents=others))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seconds', type=float, default=120.0, help='recorded seconds per drive')
    parser.add_argument('--checkpoint', default='', help='default: the shipped one')
    args = parser.parse_args()
    import torch
    torch.set_num_threads(1)
    from adawm_planner.analyze import analyze
    from adawm_planner.nodes.convert import default_checkpoint
    checkpoint = args.checkpoint or default_checkpoint()
    print(f'checkpoint {checkpoint}; {args.seconds:.0f} s per drive, 20 Hz frames, a model step every 0.1 s')
    print('| drive | model steps | wall s | ms per step | real time × |')
    print('|---|---|---|---|---|')
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, bag in drives(tmp, args.seconds):
            summary = analyze(bag, checkpoint, tmp / f'out-{bag.name}')
            wall = summary['wall_seconds']
            print(f'| {name} | {summary["steps"]} | {wall:.2f} | {1000 * wall / max(summary["steps"], 1):.2f} | '
                  f'{summary["real_time_factor"]} |', flush=True)
        started = time.perf_counter()
        subprocess.run([sys.executable, '-m', 'adawm_planner.cli', 'analyze', '--help'], check=True,
                       capture_output=True)
        print(f'process start (`adawm analyze --help`): {time.perf_counter() - started:.2f} s')


if __name__ == '__main__':
    main()
