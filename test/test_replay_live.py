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
                '-p', 'mode:=plan', '-p', 'candidates:=8', '-p', 'horizon:=4',
                # wall-clock staleness: a replay at a quarter of the recorded pace stretches every pause 4x
                '-p', 'input_timeout:=4.0'], log)


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

    from diagnostic_msgs.msg import DiagnosticArray

    log = open(tmp_path / 'nodes.log', 'w')
    bag = tmp_path / 'live'
    context = Context()
    rclpy.init(context=context)
    try:   # every wait below is for an event, with a margin that holds on a loaded machine
        watcher = rclpy.create_node('replay_test_watcher', context=context)
        watch = SingleThreadedExecutor(context=context)
        watch.add_node(watcher)
        routes, planning = [], []
        watcher.create_subscription(Path, '/carla/ego_vehicle/waypoints', routes.append, qos.LATCHED_IN)
        watcher.create_subscription(DiagnosticArray, '/diagnostics', planning.append, qos.EVENTS_IN)

        def wait_for(predicate, seconds, what):
            end = time.monotonic() + seconds
            while time.monotonic() < end and not predicate():
                watch.spin_once(timeout_sec=0.05)
            assert predicate(), f'{what} within {seconds} s; log:' + (tmp_path / 'nodes.log').read_text()[-2000:]

        recorder = run(['-m', 'adawm_planner.cli', 'record', str(bag), '--topics', *BRIDGE_TOPICS, COMMANDS], log)
        wait_for(lambda: 'adawm_recorder' in watcher.get_node_names(), 60, 'the recorder up')
        live_planner = planner(tiny_checkpoint, log)
        wait_for(lambda: planning, 120, 'the live planner spinning (its first diagnostics)')
        bridge = run(['-m', 'adawm_planner.nodes.sim_bridge_node', '--ros-args', '-p', 'wait_for_command:=true',
                      '-p', 'seed:=4'], log)
        wait_for(lambda: len(routes) >= 5, 240, 'four episode boundaries in the live run')
        for proc in (bridge, live_planner, recorder):
            stop(proc)
    finally:
        rclpy.try_shutdown(context=context)

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
        from diagnostic_msgs.msg import DiagnosticArray
        up = []
        node.create_subscription(DiagnosticArray, '/diagnostics', up.append, qos.EVENTS_IN)
        fresh_planner = planner(tiny_checkpoint, log)
        end = time.monotonic() + 120   # the planner is spinning before the first recorded message goes out
        while time.monotonic() < end and not up:
            executor.spin_once(timeout_sec=0.05)
        assert up, 'the replay planner never came up'
        # the live run went as fast as the planner answered; a quarter of that leaves the replay planner room
        player = run(['-m', 'adawm_planner.cli', 'replay', str(bag), '--rate', '0.25', '--wait-for-subscribers', '60',
                      '--topics', *BRIDGE_TOPICS], log)
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
