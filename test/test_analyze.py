"""`adawm analyze`: offline over a rosbag2 recording, no DDS; and what it does with damaged bags."""
import csv
import math
from pathlib import Path

import pytest
from rclpy.serialization import serialize_message
from rosbags.rosbag2 import StoragePlugin, Writer
from std_msgs.msg import String

from adawm_planner.analyze import analyze
from adawm_planner.core.opendrive import to_opendrive
from adawm_planner.nodes import convert
from adawm_planner.nodes.bag import typestore_with
from adawm_planner.sim import default_task, make_env

pytestmark = pytest.mark.ros


def write_bag(path: Path, frames=60, with_map=True, extra=True, live=None, restart_at=None):
    """A drive of the embedded task as the bridge would publish it, written the way `adawm record` does.
    `live`, a dict, receives what the simulator itself computed at each frame: stamp -> (TTC, speed)."""
    from carla_msgs.msg import CarlaEgoVehicleControl
    env = make_env(default_task(), seed=2, dt=0.05)
    env.reset(seed=2)
    sim = env.unwrapped
    scene = sim.scene()
    types = {'/carla/map': 'std_msgs/msg/String', '/carla/ego_vehicle/waypoints': 'nav_msgs/msg/Path',
             '/carla/ego_vehicle/odometry': 'nav_msgs/msg/Odometry',
             '/carla/ego_vehicle/objects': 'derived_object_msgs/msg/ObjectArray',
             '/carla/ego_vehicle/vehicle_control_cmd': 'carla_msgs/msg/CarlaEgoVehicleControl',
             '/carla/ego_vehicle/lidar': 'sensor_msgs/msg/PointCloud2'}
    if not with_map:
        del types['/carla/map']
    if not extra:
        del types['/carla/ego_vehicle/lidar']
    store = typestore_with(set(types.values()))
    if extra:   # a vendor sensor whose message package this machine does not have
        from rosbags.typesys import get_types_from_msg
        store.register(get_types_from_msg('float32 range\nfloat32 azimuth', 'vendor_msgs/msg/Radar'))
        types['/carla/ego_vehicle/radar'] = 'vendor_msgs/msg/Radar'

    with Writer(path, version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {t: writer.add_connection(t, m, typestore=store) for t, m in types.items()}
        ns = 1
        if with_map:
            writer.write(conns['/carla/map'], ns, serialize_message(String(data=to_opendrive(scene.lanes))))
        writer.write(conns['/carla/ego_vehicle/waypoints'], ns, serialize_message(convert.route_msg(scene.route, 0.0)))
        for i in range(frames):
            _, _, _, _, info = sim.step_control(0.4, 0.0, 0.0)
            scene = sim.scene()
            # header stamps restart with the simulator; the recorder's receive times (the bag's) never do
            stamp = 0.05 * (i + 1 if restart_at is None or i < restart_at else i + 1 - restart_at)
            if live is not None:
                live[round(stamp, 3)] = (info['ttc'], scene.ego.speed)
            ns = int(0.05 * (i + 1) * 1e9)
            writer.write(conns['/carla/ego_vehicle/objects'], ns, serialize_message(convert.objects_msg(scene.agents, stamp)))
            writer.write(conns['/carla/ego_vehicle/odometry'], ns,
                         serialize_message(convert.odometry_msg(scene.ego, stamp, 'ego_vehicle')))
            control = CarlaEgoVehicleControl(throttle=0.4)
            control.header.stamp = convert.time_msg(stamp)
            writer.write(conns['/carla/ego_vehicle/vehicle_control_cmd'], ns + 1000, serialize_message(control))
            if extra:
                writer.write(conns['/carla/ego_vehicle/lidar'], ns + 2000, b'\x00\x01\x00\x00garbage-not-cdr')
                writer.write(conns['/carla/ego_vehicle/radar'], ns + 3000, b'\x00\x01\x00\x00' + bytes(8))
    return path


def test_analyze_a_recorded_drive(tiny_checkpoint, tmp_path):
    live = {}
    bag = write_bag(tmp_path / 'drive', live=live)
    summary = analyze(bag, tiny_checkpoint, tmp_path / 'out')
    assert summary['steps'] == 30   # 60 frames at 20 Hz -> a model step every 0.1 s
    with open(tmp_path / 'out/steps.csv') as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 30
    assert all(0.0 <= float(r['eps_model']) <= 1.0 and float(r['eps_policy']) == 0.0 for r in rows)
    assert {r['decision'] for r in rows} <= {'model', 'policy'}
    times = [float(r['time']) for r in rows]
    assert times == sorted(times) and times[1] - times[0] == pytest.approx(0.1)
    # what the analysis rebuilt from the messages is what the simulator computed live
    for row in rows:
        ttc, speed = live[round(float(row['time']), 3)]
        assert float(row['ttc']) == pytest.approx(ttc, rel=1e-6) and float(row['speed']) == pytest.approx(speed)
    for name in ('timeline.png', 'montage.png', 'summary.md'):
        assert (tmp_path / 'out' / name).stat().st_size > 0
    text = (tmp_path / 'out/summary.md').read_text()
    assert 'skipped /carla/ego_vehicle/lidar: not used by the analysis' in text
    assert 'skipped /carla/ego_vehicle/radar' in text   # vendor_msgs is not installed here


def test_the_decisions_are_the_adaptation_nodes_with_a_reference(tiny_checkpoint, tmp_path):
    """With the checkpoint's mismatch reference the window columns are the calibrated ε_P, ε_π and its
    episode-level part the adaptation node's rule reads, over a drive longer than one filtering chunk."""
    import shutil

    from adawm_planner.analyze import CHUNK
    from adawm_planner.experiments import mismatch_reference
    checkpoint = tmp_path / 'ckpt'
    shutil.copytree(tiny_checkpoint, checkpoint)
    mismatch_reference.write(checkpoint, episodes=4, horizon=2)
    bag = write_bag(tmp_path / 'drive', frames=4 * CHUNK)
    summary = analyze(bag, checkpoint, tmp_path / 'out', window=16)
    assert summary['calibrated'] and summary['steps'] == 2 * CHUNK
    with open(tmp_path / 'out/steps.csv') as f:
        rows = list(csv.DictReader(f))
    # as the node: no decision until the window is full
    assert all(r['decision'] == '' and math.isnan(float(r['window_eps_model'])) for r in rows[:15])
    for column in ('window_eps_model', 'window_eps_policy', 'window_eps_policy_episodes'):
        assert all(0.0 <= float(r[column]) <= 1.0 for r in rows[15:]), column
    assert {r['decision'] for r in rows[15:]} <= {'model', 'policy', 'none'}
    # the drive leaves the route (write_bag drives straight on): one failed episode is no evidence yet
    assert float(rows[-1]['window_eps_policy_episodes']) == 0.0
    assert 'uncalibrated' not in (tmp_path / 'out/summary.md').read_text()


def test_time_running_backwards_starts_over(tiny_checkpoint, tmp_path):
    """A simulator restart mid-recording: stamps jump back; the analysis resets and goes on."""
    bag = write_bag(tmp_path / 'restart', frames=80, extra=False, restart_at=40)
    summary = analyze(bag, tiny_checkpoint, tmp_path / 'out')
    with open(tmp_path / 'out/steps.csv') as f:
        times = [float(r['time']) for r in csv.DictReader(f)]
    assert summary['steps'] >= 35 and min(times[25:]) < max(times[:20])   # both halves analysed


def test_missing_map_is_stated_not_raised(tiny_checkpoint, tmp_path):
    bag = write_bag(tmp_path / 'nomap', frames=10, with_map=False)
    summary = analyze(bag, tiny_checkpoint, tmp_path / 'out')
    assert summary['steps'] == 0
    assert any('/carla/map is not in the bag' in n for n in summary['notes'])
    assert 'Nothing could be analysed' in (tmp_path / 'out/summary.md').read_text()


def test_truncated_bag_analyses_what_came_before(tiny_checkpoint, tmp_path):
    bag = write_bag(tmp_path / 'cut', frames=700, extra=False)   # ~1.8 MB: two MCAP chunks of ≤ 1 MiB
    mcap = next(bag.glob('*.mcap'))
    data = mcap.read_bytes()
    mcap.write_bytes(data[:len(data) - 150_000])   # a recording cut short: the footer and the last chunk gone
    summary = analyze(bag, tiny_checkpoint, tmp_path / 'out')
    assert 0 < summary['steps'] < 350, summary
    assert any('breaks off after' in n for n in summary['notes']), summary['notes']


def test_not_a_bag(tiny_checkpoint, tmp_path):
    (tmp_path / 'empty').mkdir()
    summary = analyze(tmp_path / 'empty', tiny_checkpoint, tmp_path / 'out')
    assert summary['steps'] == 0 and 'could not be opened' in summary['notes'][0]


def test_analyze_a_drive_on_a_carla_style_junction(tiny_checkpoint, tmp_path):
    """A CARLA-style OpenDRIVE junction (roads with lines and arcs inside a <junction>), parsed by the carla
    client, with the ego driving one of its turns among other cars."""
    from carla_junction import junction_xodr, record

    from adawm_planner.core.opendrive import lanes_from_opendrive
    xodr = junction_xodr()
    lanes = lanes_from_opendrive(xodr)
    assert len(lanes) == 20   # 4 arms × 2 lanes + 12 connecting lanes
    turn = max(lanes, key=lambda lane: len(lane.center))
    bag = record(tmp_path / 'junction', xodr, turn.center, seconds=6.0,
                 agents=[(lane.center, 6.0) for lane in lanes if lane is not turn][:5])
    summary = analyze(bag, tiny_checkpoint, tmp_path / 'out')
    assert summary['steps'] == 60 and not summary['notes'], summary
    with open(tmp_path / 'out/steps.csv') as f:
        rows = list(csv.DictReader(f))
    assert all(0.0 <= float(r['eps_model']) <= 1.0 for r in rows) and float(rows[-1]['speed']) == pytest.approx(5.0)
