"""Record a deterministic embedded run, replay it into a fresh planner: the same commands as live."""
import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.ros

BRIDGE_TOPICS = ['/carla/map', '/carla/ego_vehicle/waypoints', '/carla/ego_vehicle/odometry',
                 '/carla/ego_vehicle/objects', '/carla/ego_vehicle/vehicle_status']
COMMANDS = '/carla/ego_vehicle/vehicle_control_cmd'


def run(module_args, log):
    return subprocess.Popen([sys.executable, *module_args], env=dict(os.environ), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc, sig=signal.SIGINT):
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
    proc.wait(timeout=30)


def planner(checkpoint, log):
    return run(['-m', 'adawm_planner.nodes.planner_node', '--ros-args', '-p', f'checkpoint:={checkpoint}',
                '-p', 'mode:=plan', '-p', 'candidates:=8', '-p', 'horizon:=4'], log)


def stamp_of(msg):
    return round(msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9, 3)


def test_replay_gives_the_live_commands(tiny_checkpoint, tmp_path):
    import rclpy
    from carla_msgs.msg import CarlaEgoVehicleControl
    from nav_msgs.msg import Odometry, Path
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.serialization import deserialize_message
    from rosbags.rosbag2 import Reader

    from adawm_planner.nodes import qos

    log = open(tmp_path / 'nodes.log', 'w')
    bag = tmp_path / 'live'
    recorder = run(['-m', 'adawm_planner.cli', 'record', str(bag), '--topics', *BRIDGE_TOPICS, COMMANDS], log)
    time.sleep(3)
    live_planner = planner(tiny_checkpoint, log)
    bridge = run(['-m', 'adawm_planner.nodes.sim_bridge_node', '--ros-args', '-p', 'wait_for_command:=true',
                  '-p', 'seed:=4'], log)
    time.sleep(15)
    for proc in (bridge, live_planner, recorder):
        stop(proc)

    live, route_stamps, frames = {}, [], []
    with Reader(bag) as reader:
        for conn, _, data in reader.messages():
            if conn.topic.endswith('odometry'):
                frames.append(stamp_of(deserialize_message(bytes(data), Odometry)))
            elif conn.topic == COMMANDS:
                msg = deserialize_message(bytes(data), CarlaEgoVehicleControl)
                live[stamp_of(msg)] = (msg.throttle, msg.steer, msg.brake)
            elif conn.topic.endswith('waypoints'):
                route_stamps.append(stamp_of(deserialize_message(bytes(data), Path)))
    assert len(route_stamps) >= 2, ('the live run needs an episode boundary', (tmp_path / 'nodes.log').read_text()[-2000:])

    context = Context()
    rclpy.init(context=context)
    replayed = {}
    try:
        node = rclpy.create_node('replay_listener', context=context)
        node.create_subscription(CarlaEgoVehicleControl, COMMANDS,
                                 lambda m: replayed.__setitem__(stamp_of(m), (m.throttle, m.steer, m.brake)),
                                 qos.SENSOR_IN)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        fresh_planner = planner(tiny_checkpoint, log)
        time.sleep(12)   # the planner is up and subscribed before the first recorded message goes out
        # the live run went as fast as the planner answered; a quarter of that leaves the replay planner room
        player = run(['-m', 'adawm_planner.cli', 'replay', str(bag), '--rate', '0.25', '--topics', *BRIDGE_TOPICS], log)
        while player.poll() is None:
            executor.spin_once(timeout_sec=0.01)
        for _ in range(100):
            executor.spin_once(timeout_sec=0.01)
        stop(fresh_planner)
    finally:
        rclpy.try_shutdown(context=context)

    # From the second episode on, both planners start each episode from the same reset, so every frame is
    # answered the same — up to a frame one of them never answered (best-effort delivery under load): from
    # there the two latent states have seen different histories. Compare each episode up to its first gap.
    compared, differing = 0, []
    episodes = list(zip(route_stamps[1:], route_stamps[2:] + [float('inf')]))
    for start, end in episodes:
        for stamp in sorted(s for s in frames if start <= s < end):
            if stamp not in replayed or stamp not in live:
                break
            compared += 1
            if live[stamp] != replayed[stamp]:
                differing.append((stamp, live[stamp], replayed[stamp]))
    assert compared >= 40, (compared, len(live), len(replayed))
    # A new episode's route and its first frame travel on different topics, and DDS does not order topics
    # against each other: now and then one planner takes that first frame with the old route (a known race,
    # in carla-ros-bridge too). Everything else must be the same, frame for frame.
    assert len(differing) <= 0.05 * compared, (compared, differing[:5])
