"""`adawm dataset` (recordings -> training sequences), `adawm pretrain --dataset` and `adawm finetune --dataset`:
the round trip from a recorded drive to a checkpoint the planner loads."""
import csv
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from rclpy.serialization import serialize_message
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import get_types_from_msg
from std_msgs.msg import String

from adawm_planner.core.adaptation import Finetuner
from adawm_planner.core.checkpoint import load_checkpoint
from adawm_planner.core.config import FinetuneConfig
from adawm_planner.core.opendrive import to_opendrive
from adawm_planner.core.pipeline import StepPipeline
from adawm_planner.core.presets import load_preset
from adawm_planner.core.scene import Agents, Ego
from adawm_planner.dataset import build_dataset
from adawm_planner.experiments.dataset import (DatasetError, finetune_from_dataset, load_dataset,
                                               pretrain_from_dataset)
from adawm_planner.nodes import convert
from adawm_planner.nodes.bag import typestore_with
from adawm_planner.sim import default_task, make_env
from adawm_planner.sim.scripted import scripted_control

pytestmark = pytest.mark.ros

TOPICS = {'/carla/map': 'std_msgs/msg/String', '/carla/ego_vehicle/waypoints': 'nav_msgs/msg/Path',
          '/carla/ego_vehicle/odometry': 'nav_msgs/msg/Odometry',
          '/carla/ego_vehicle/objects': 'derived_object_msgs/msg/ObjectArray',
          '/carla/ego_vehicle/vehicle_control_cmd': 'carla_msgs/msg/CarlaEgoVehicleControl',
          '/carla/ego_vehicle/collision': 'carla_msgs/msg/CarlaCollisionEvent',
          '/carla/ego_vehicle/lidar': 'vendor_lidar_msgs/msg/Sweep'}


class BagWriter:
    """Frames as carla-ros-bridge publishes them (20 Hz), written as `adawm record` writes them, with a lidar of
    a vendor type this machine has no message package for."""

    def __init__(self, writer):
        from carla_msgs.msg import CarlaEgoVehicleControl
        self.control_class = CarlaEgoVehicleControl
        store = typestore_with(set(TOPICS.values()) - {TOPICS['/carla/ego_vehicle/lidar']})
        store.register(get_types_from_msg('float32[] ranges\nuint32 sweep', TOPICS['/carla/ego_vehicle/lidar']))
        self.writer = writer
        self.conns = {t: writer.add_connection(t, m, typestore=store) for t, m in TOPICS.items()}
        self.ns = 0   # the recorder's receive time: never runs back

    def write(self, topic, msg):
        self.ns += 1000
        self.writer.write(self.conns[topic], self.ns, msg if isinstance(msg, bytes) else serialize_message(msg))

    def episode(self, xodr, route):
        self.write('/carla/map', String(data=xodr))
        self.write('/carla/ego_vehicle/waypoints', convert.route_msg(route, 0.0))

    def frame(self, stamp, ego, agents, control, collision=False):
        self.ns += 50_000_000
        if collision:   # the bridge's collision sensor fires before the frame's odometry
            from carla_msgs.msg import CarlaCollisionEvent
            event = CarlaCollisionEvent(other_actor_id=7)
            event.header.stamp = convert.time_msg(stamp)
            self.write('/carla/ego_vehicle/collision', event)
        self.write('/carla/ego_vehicle/objects', convert.objects_msg(agents, stamp))
        self.write('/carla/ego_vehicle/odometry', convert.odometry_msg(ego, stamp, 'ego_vehicle'))
        if control is not None:
            msg = self.control_class(throttle=control[0], steer=control[1], brake=control[2])
            msg.header.stamp = convert.time_msg(stamp)
            self.write('/carla/ego_vehicle/vehicle_control_cmd', msg)
        self.write('/carla/ego_vehicle/lidar', b'\x00\x01\x00\x00' + bytes(12))


def write_drives(path, episodes=3, frames=240, seed=0):
    """Episodes of the embedded task driven by the scripted driver with every third step's control drawn at
    random (so the data holds many actions); each episode a new route, simulation time starting over."""
    env = make_env(default_task(), seed=seed, dt=0.05)
    sim = env.unwrapped
    rng = np.random.default_rng(seed)
    with Writer(path, version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin.MCAP) as writer:
        bag = BagWriter(writer)
        for episode in range(episodes):
            env.reset(seed=seed + episode)
            scene = sim.scene()
            bag.episode(to_opendrive(scene.lanes), scene.route)
            control = (0.0, 0.0, 0.0)
            for i in range(frames):
                if i % 2 == 0:   # the driver decides at 10 Hz
                    control = (scripted_control(scene, sim.tracker, sim.task['v_des']) if i % 6 else
                               (float(rng.uniform(0, 1)), float(rng.uniform(-0.5, 0.5)), 0.0))
                _, _, terminated, truncated, _ = sim.step_control(*control)
                scene = sim.scene()
                bag.frame(0.05 * (i + 1), scene.ego, scene.agents, control)
                if terminated or truncated:
                    break
    return path


@pytest.fixture(scope='module')
def drives(tmp_path_factory):
    return write_drives(tmp_path_factory.mktemp('bags') / 'drives')


@pytest.fixture(scope='module')
def contract():
    return make_env(default_task()).unwrapped.contract()


def test_recording_becomes_a_dataset(drives, contract, tmp_path):
    manifest = build_dataset([drives], tmp_path / 'ds', contract, {'task': default_task()}, default_task(),
                             shard_steps=100)
    source = manifest['sources'][0]
    assert manifest['segments'] == 3 == source['segments']   # three routes, time running back twice
    assert manifest['steps'] == source['steps'] > 200 and len(manifest['shards']) == math.ceil(manifest['steps'] / 100)
    assert source['notes'] == ['skipped /carla/ego_vehicle/lidar: not used by the dataset']
    mapping = manifest['action_mapping']
    assert len(mapping['actions']) >= 5 and 0 < mapping['pedal_residual']['mean'] < 1
    assert mapping['steer_residual']['max'] <= 0.3 + 1e-6   # half the widest spacing of the steer choices
    loaded, loaded_contract, arrays = load_dataset(tmp_path / 'ds')
    assert loaded_contract == contract and loaded == json.loads((tmp_path / 'ds/dataset.json').read_text())
    n = manifest['steps']
    assert arrays['bev'].shape == (n, contract.bev.size, contract.bev.size, 5) and arrays['ego'].shape == (n, 9)
    first = arrays['is_first'].astype(bool)
    assert first.sum() == 3 and (arrays['action'][first] == -1).all() and (arrays['action'][~first] >= 0).all()
    assert (arrays['reward'][first] == 0).all() and np.diff(arrays['episode']).min() >= 0
    # each step's action is the nearest to the recorded control, and the ego vector carries that control
    table = contract.action_table()
    for i in np.flatnonzero(~first)[:50]:
        throttle, steer, brake = arrays['control'][i]
        assert arrays['action'][i] == table.index({'throttle': throttle, 'steer': steer, 'brake': brake})
        assert arrays['ego'][i][2:5] == pytest.approx([steer, throttle, brake])
    # an episode that ended (collision, arrival, off the route) ends on a terminal step, an arrival marked
    assert sum(manifest['outcomes'].values()) == arrays['is_terminal'].sum()
    assert arrays['success'].sum() == manifest['outcomes'].get('success', 0) and not arrays['success'][~arrays['is_terminal'].astype(bool)].any()


def test_pretrain_from_a_dataset_then_the_planner_loads_it(drives, contract, tmp_path):
    build_dataset([drives], tmp_path / 'ds', contract, {'task': default_task()}, default_task())
    preset = load_preset('tiny')
    agent, heldout, untrained = pretrain_from_dataset(tmp_path / 'ds', preset, 200, tmp_path / 'run', holdout=0.2,
                                                      eval_every=100, progress=False)
    assert heldout['bev_prediction_error'] < 0.8 * untrained['bev_prediction_error'], (heldout, untrained)
    assert heldout['model_loss'] < untrained['model_loss']
    scalars = (tmp_path / 'run/scalars.csv').read_text()
    assert 'heldout/bev_prediction_error' in scalars and 'train/actor_loss' in scalars
    # the planner node's loading path: the checkpoint, its contract, a StepPipeline on it, a planned action
    loaded, meta = load_checkpoint(tmp_path / 'run/checkpoint')
    assert meta['contract'] == contract and meta['updates'] == 200
    env = make_env(default_task(), seed=5)
    env.reset(seed=5)
    step = StepPipeline(meta['contract']).step(0.0, env.unwrapped.scene())
    action, _, _ = loaded.act(step.obs, None, 'plan')
    assert 0 <= action < len(contract.action_table())

    # resumable: the same run folder continues from the saved updates and optimiser state
    _, resumed, untrained_again = pretrain_from_dataset(tmp_path / 'ds', preset, 250, tmp_path / 'run', holdout=0.2,
                                                        eval_every=100, progress=False)
    assert untrained_again == untrained and load_checkpoint(tmp_path / 'run/checkpoint')[1]['updates'] == 250


def test_behaviour_cloning_pulls_the_actor_to_the_recorded_actions(drives, contract, tmp_path):
    """With the weight on, the actor's likelihood of the recorded actions rises over the updates (it is
    logged); with 0 the actor learns in imagination alone and nothing is logged."""
    import csv as csv_module
    build_dataset([drives], tmp_path / 'ds', contract, {'task': default_task()}, default_task())
    preset = load_preset('tiny')

    def nll(run):
        with open(run / 'scalars.csv') as f:
            return [float(v) for _, k, v in csv_module.reader(f) if k == 'train/behaviour_nll']
    pretrain_from_dataset(tmp_path / 'ds', preset, 300, tmp_path / 'bc', holdout=0.2, progress=False,
                          behaviour_cloning=1.0)
    pretrain_from_dataset(tmp_path / 'ds', preset, 50, tmp_path / 'plain', holdout=0.2, progress=False,
                          behaviour_cloning=0.0)
    logged = nll(tmp_path / 'bc')
    assert len(logged) == 6 and logged[-1] < logged[0] - 0.1, logged
    assert nll(tmp_path / 'plain') == []


def test_finetune_offline_on_a_dataset(drives, contract, tiny_checkpoint, tmp_path):
    build_dataset([drives], tmp_path / 'ds', load_checkpoint(tiny_checkpoint)[1]['contract'],
                  {'checkpoint': str(tiny_checkpoint)})
    config = FinetuneConfig(window=16, train_every=8)
    result = finetune_from_dataset(tiny_checkpoint, tmp_path / 'ds', tmp_path / 'ft', config=config, progress=False)
    assert result['finetune_steps'] == sum(result['decisions'].values()) > 20
    assert set(result['adapters']) == {'model', 'policy'}
    for target, entry in result['adapters'].items():
        assert (tmp_path / 'ft' / entry['path']).stat().st_size > 0
        assert json.loads((tmp_path / 'ft' / f'{target}_adapter.json').read_text())['sha256'] == entry['sha256']
    trace = (tmp_path / 'ft/trace.csv').read_text().splitlines()
    assert len(trace) == result['finetune_steps'] + 1 and trace[0].startswith('finetune_step,dataset_step')
    assert finetune_from_dataset(tiny_checkpoint, tmp_path / 'ds', tmp_path / 'ft', config=config) == result

    # stopped after its 11th step (state saved at the 8th), the run resumes there and ends as long as one
    # that was never stopped, its trace counting every step once
    calls, step = [0], Finetuner.step

    def stopping_step(self, *args):
        calls[0] += 1
        if calls[0] == 11:
            raise KeyboardInterrupt
        return step(self, *args)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Finetuner, 'step', stopping_step)
        with pytest.raises(KeyboardInterrupt):
            finetune_from_dataset(tiny_checkpoint, tmp_path / 'ds', tmp_path / 'again', config=config,
                                  progress=False, save_every=4)
    assert json.loads((tmp_path / 'again/finetune_state.json').read_text())['finetune_step'] == 8
    resumed = finetune_from_dataset(tiny_checkpoint, tmp_path / 'ds', tmp_path / 'again', config=config,
                                    progress=False, save_every=4)
    assert resumed['resumed_at_step'] > 0 and resumed['finetune_steps'] == result['finetune_steps']
    assert sum(resumed['decisions'].values()) == result['finetune_steps']
    steps = [int(line.split(',')[0]) for line in (tmp_path / 'again/trace.csv').read_text().splitlines()[1:]]
    assert steps == list(range(1, result['finetune_steps'] + 1))


def test_offline_adawm_reads_the_episodes_that_ended(tiny_checkpoint, tmp_path):
    """Each finetuning step's window carries the outcomes of the latest episodes that ended before it in the
    recording (0 arrived, 1 failed), as the online loop and the adaptation node feed theirs."""
    drives = write_drives(tmp_path / 'drives', episodes=4, frames=600)   # long enough to end
    build_dataset([drives], tmp_path / 'ds', load_checkpoint(tiny_checkpoint)[1]['contract'],
                  {'checkpoint': str(tiny_checkpoint)})
    _, _, arrays = load_dataset(tmp_path / 'ds')
    seen, step = [], Finetuner.step

    def recording_step(self, batch, window):
        seen.append(list(window['failures']))
        return step(self, batch, window)
    config = FinetuneConfig(window=16, train_every=8, outcome_window=2)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Finetuner, 'step', recording_step)
        finetune_from_dataset(tiny_checkpoint, tmp_path / 'ds', tmp_path / 'ft', config=config, progress=False)
    ends = np.flatnonzero(arrays['is_terminal'])
    assert len(ends) >= 2   # the drives hold episodes that ended
    with open(tmp_path / 'ft/trace.csv') as f:
        positions = [int(r['dataset_step']) for r in csv.DictReader(f)]
    assert len(positions) == len(seen)
    for position, failures in zip(positions, seen):
        ended = [1.0 - arrays['success'][i] for i in ends if i < position]
        assert failures == ended[-2:]


def test_a_dataset_of_another_contract_is_refused(drives, tiny_checkpoint, tmp_path):
    other = make_env(default_task(), dt=0.2).unwrapped.contract()
    build_dataset([drives], tmp_path / 'ds', other, {'task': 'right_turn at 5 Hz'})
    with pytest.raises(DatasetError, match='another contract'):
        finetune_from_dataset(tiny_checkpoint, tmp_path / 'ds', tmp_path / 'ft', progress=False)


# A CARLA-style OpenDRIVE junction: an incoming road, a right turn (arc) and a straight connecting road inside
# junction 100, and two outgoing roads, one of them a line followed by an arc; two lanes each, painted lines.
def _road(rid, length, junction, geometries, predecessor, successor):
    lane = ('<lane id="{}" type="driving" level="false"><link/><width sOffset="0" a="3.5" b="0" c="0" d="0"/>'
            '<roadMark sOffset="0" type="{}" weight="standard" color="standard" width="0.15"/></lane>')
    return (f'<road name="Road {rid}" length="{length}" id="{rid}" junction="{junction}"><link>{predecessor}{successor}'
            f'</link><type s="0" type="town"><speed max="30" unit="km/h"/></type><planView>{geometries}</planView>'
            '<elevationProfile/><lateralProfile/><lanes><laneSection s="0"><left>' + lane.format(1, 'solid')
            + '</left><center><lane id="0" type="none" level="false"><roadMark sOffset="0" type="broken" '
            'weight="standard" color="standard" width="0.15"/></lane></center><right>' + lane.format(-1, 'solid')
            + '</right></laneSection></lanes></road>')


def carla_junction() -> str:
    quarter = math.pi / 2 * 10
    geometry = lambda s, x, y, hdg, length, shape: (f'<geometry s="{s}" x="{x}" y="{y}" hdg="{hdg}" '
                                                    f'length="{length}">{shape}</geometry>')
    line, arc = '<line/>', lambda k: f'<arc curvature="{k}"/>'
    link = lambda kind, element, eid, contact='': (f'<{kind} elementType="{element}" elementId="{eid}"'
                                                   + (f' contactPoint="{contact}"' if contact else '') + '/>')
    roads = [
        _road(1, 50, -1, geometry(0, -50, 0, 0, 50, line), '', link('successor', 'junction', 100)),
        _road(3, quarter, 100, geometry(0, 0, 0, 0, quarter, arc(-0.1)), link('predecessor', 'road', 1, 'end'),
              link('successor', 'road', 2, 'start')),
        _road(4, 20, 100, geometry(0, 0, 0, 0, 20, line), link('predecessor', 'road', 1, 'end'),
              link('successor', 'road', 5, 'start')),
        _road(2, 40, -1, geometry(0, 10, -10, -math.pi / 2, 20, line)
              + geometry(20, 10, -30, -math.pi / 2, 20, arc(0.02)), link('predecessor', 'junction', 100), ''),
        _road(5, 40, -1, geometry(0, 20, 0, 0, 40, line), link('predecessor', 'junction', 100), ''),
    ]
    connections = ''.join(f'<connection id="{i}" incomingRoad="1" connectingRoad="{r}" contactPoint="start">'
                          '<laneLink from="-1" to="-1"/></connection>' for i, r in enumerate((3, 4)))
    return ('<?xml version="1.0" standalone="yes"?><OpenDRIVE><header revMajor="1" revMinor="4" name="" version="1"'
            ' north="0" south="0" east="0" west="0"><geoReference><![CDATA[+proj=tmerc]]></geoReference></header>'
            + ''.join(roads) + f'<junction id="100" name="junction">{connections}</junction></OpenDRIVE>')


def test_a_carla_junction_with_unknown_sensors_converts(contract, tmp_path):
    """The ego drives the right turn through the junction (lane -1 of roads 1, 3, 2) at 6 m/s, loses 1.5 s of
    frames on the way, collides at 9 s and is recorded on for 1 s more; a second bag of the same drive has no
    recorded command."""
    from adawm_planner.core.opendrive import lanes_from_opendrive
    xodr = carla_junction()
    assert len(lanes_from_opendrive(xodr)) >= 8   # carla parsed every road and lane
    straight_in = np.stack([np.linspace(-50, 0, 26), np.full(26, -1.75)], 1)
    turn = np.array([(8.25 * math.sin(a), -10 + 8.25 * math.cos(a)) for a in np.linspace(0, math.pi / 2, 12)])
    straight_out = np.stack([np.full(11, 8.25), np.linspace(-10, -30, 11)], 1)
    route = np.concatenate([straight_in, turn[1:], straight_out[1:]])
    seg = np.diff(route, axis=0)
    arc = np.concatenate([[0], np.cumsum(np.hypot(*seg.T))])

    def drive(path, frames, lost=(), commanded=True):
        with Writer(path, version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin.MCAP) as writer:
            bag = BagWriter(writer)
            bag.episode(xodr, route)
            for i in range(frames):
                if i in lost:
                    continue
                s = 6.0 * 0.05 * (i + 1)
                k = min(np.searchsorted(arc, s) - 1, len(seg) - 1)
                x, y = route[k] + seg[k] / np.hypot(*seg[k]) * (s - arc[k])
                ego = Ego(x=float(x), y=float(y), yaw=float(np.arctan2(seg[k][1], seg[k][0])), speed=6.0)
                bag.frame(0.05 * (i + 1), ego, Agents(), (0.3, 0.0, 0.0) if commanded else None, collision=i == 179)
        return path

    drive(tmp_path / 'junction', 200, lost=range(100, 130))   # 1.5 s of frames lost: a gap
    drive(tmp_path / 'uncommanded', 40, commanded=False)
    manifest = build_dataset([tmp_path / 'junction', tmp_path / 'uncommanded'], tmp_path / 'ds', contract,
                             {'task': default_task()})
    source, uncommanded = manifest['sources']
    # no command on the topic: the episode's first step (which needs no action) and nothing else
    assert uncommanded['steps'] == 1 and [s['why'] for s in uncommanded['skipped_spans']] == [
        'no command recorded yet on /carla/ego_vehicle/vehicle_control_cmd: the action is unknown']
    assert source['steps'] >= 70 and not [n for n in source['notes'] if 'lidar' not in n], source['notes']
    gap, after = source['skipped_spans']
    assert source['segments'] == 2 and gap['why'].startswith('gap: 1.60 s between two steps')
    assert source['outcomes'] == {'collision': 1} and after['why'].startswith('after the episode ended (collision)')
    assert after['from'] == pytest.approx(9.15) and after['to'] == pytest.approx(9.95)
    _, _, arrays = load_dataset(tmp_path / 'ds')
    # steps at 0.05 + 0.1·k: the collision between two steps (9.0 s) ends the episode at the next one
    last = source['steps'] - 1
    assert arrays['is_terminal'][last] and arrays['stamp'][last] == pytest.approx(9.05)
    assert arrays['reward'][last] < -100   # −30·|v| at 6 m/s
    assert arrays['bev'][:, :, :, 0].any(axis=(1, 2)).all()   # the junction's roads are drawn at every step
    # and it trains: a model from it, then AdaWM on it from a checkpoint of the same contract
    _, heldout, _ = pretrain_from_dataset(tmp_path / 'ds', load_preset('tiny'), 10, tmp_path / 'run', holdout=0.25,
                                          eval_every=10, progress=False)
    assert np.isfinite(heldout['model_loss'])
    result = finetune_from_dataset(tmp_path / 'run/checkpoint', tmp_path / 'ds', tmp_path / 'ft', progress=False,
                                   config=FinetuneConfig(window=16, train_every=8))
    assert result['finetune_steps'] > 0 and set(result['adapters']) == {'model', 'policy'}


def straight_then_reset(path, frames, speed, collision_at=None):
    """The ego drives a 50 m straight at `speed` for `frames` frames (20 Hz), then the bridge starts the next
    episode at once (a new route: the straight driven back) and records 20 frames of it."""
    xodr = carla_junction()
    route = np.stack([np.linspace(-50, 0, 26), np.full(26, -1.75)], 1)
    with Writer(path, version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin.MCAP) as writer:
        bag = BagWriter(writer)
        bag.episode(xodr, route)
        for i in range(1, frames + 1):
            bag.frame(0.05 * i, Ego(x=-50 + speed * 0.05 * i, y=-1.75, yaw=0.0, speed=speed), Agents(),
                      (0.3, 0.0, 0.0), collision=i == collision_at)
        bag.episode(xodr, route[::-1].copy())
        for i in range(frames + 1, frames + 21):
            bag.frame(0.05 * i, Ego(x=0.0, y=-1.75, yaw=math.pi, speed=0.0), Agents(), (0.3, 0.0, 0.0))
    return path


@pytest.mark.parametrize('last_frame, arrived', [(7.40, True), (7.00, False)])
def test_an_arrival_between_two_model_steps_is_kept(contract, tmp_path, last_frame, arrived):
    """At 6.5 m/s the ego is within 2 m of the end first at 7.40 s, a frame between two model steps (7.35,
    7.45), and the bridge starts the next episode at once. The last step of the first episode is the
    arrival; a drive that stops a metre and more short of it (7.00 s) is not."""
    bag = straight_then_reset(tmp_path / 'bag', int(round(last_frame / 0.05)), 6.5)
    manifest = build_dataset([bag], tmp_path / 'ds', contract, {'task': default_task()})
    _, _, arrays = load_dataset(tmp_path / 'ds')
    last = np.flatnonzero(arrays['episode'] == arrays['episode'][0])[-1]
    assert bool(arrays['is_terminal'][last]) == bool(arrays['success'][last]) == arrived
    assert manifest['outcomes'] == ({'success': 1} if arrived else {})
    assert arrays['reward'][last] > arrays['reward'][last - 1] + 15 if arrived else arrays['reward'][last] < 15
    assert any('arrival(s) on a frame between two model steps' in n for n in manifest['sources'][0]['notes']) == arrived


def test_a_collision_between_two_model_steps_is_kept(contract, tmp_path):
    """A collision on the frame between two steps (7.00 s), the next frame already a new episode: the last
    step before it ends the episode as a collision, with the penalty at its speed."""
    bag = straight_then_reset(tmp_path / 'bag', 140, 5.0, collision_at=140)
    manifest = build_dataset([bag], tmp_path / 'ds', contract, {'task': default_task()})
    _, _, arrays = load_dataset(tmp_path / 'ds')
    last = np.flatnonzero(arrays['episode'] == arrays['episode'][0])[-1]
    assert arrays['is_terminal'][last] and not arrays['success'][last] and manifest['outcomes'] == {'collision': 1}
    assert arrays['reward'][last] < arrays['reward'][last - 1] - 100   # −30 · 5 m/s


def test_damaged_and_missing_bags_convert_what_is_readable(tmp_path):
    from test_analyze import write_bag
    bag = write_bag(tmp_path / 'cut', frames=700, extra=False)
    mcap = next(bag.glob('*.mcap'))
    mcap.write_bytes(mcap.read_bytes()[:-150_000])
    (tmp_path / 'empty').mkdir()
    result = subprocess.run([sys.executable, '-m', 'adawm_planner.cli', 'dataset', str(bag), str(tmp_path / 'empty'),
                             '--task', default_task(), '--out', str(tmp_path / 'ds')], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and 'Traceback' not in result.stderr, result.stderr
    manifest = json.loads((tmp_path / 'ds/dataset.json').read_text())
    cut, empty = manifest['sources']
    assert cut['steps'] > 0 and any('breaks off after' in n for n in cut['notes'])
    # write_bag drives straight on: it leaves the route, and what follows until a reset is not training data
    assert [s['why'] for s in cut['skipped_spans']] == ['after the episode ended (off_route), until the next reset']
    assert cut['outcomes'] == {'off_route': 1}
    assert empty['steps'] == 0 and any('could not be opened' in n for n in empty['notes'])
    assert manifest['contract_source'] == {'task': default_task()}


def test_the_commands_chain(drives, tmp_path):
    """adawm dataset -> adawm pretrain --dataset -> adawm finetune --dataset on the checkpoint it wrote."""
    def adawm(*args):
        result = subprocess.run([sys.executable, '-m', 'adawm_planner.cli', *map(str, args)], capture_output=True,
                                text=True, timeout=300, cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    assert 'action mapping error: |pedal| mean' in adawm('dataset', drives, '--task', default_task(), '--out', 'ds')
    out = adawm('pretrain', '--dataset', 'ds', '--preset', 'tiny', '--updates', 20, '--eval-every', 10,
                '--out', 'run', '--no-progress')
    assert 'bev_prediction_error' in out and (tmp_path / 'run/checkpoint/model.json').is_file()
    out = adawm('finetune', '--dataset', 'ds', '--checkpoint', 'run/checkpoint', '--window', 16, '--out', 'ft')
    assert 'adawm offline on ds' in out and (tmp_path / 'ft/model_adapter.safetensors').is_file()


def test_the_commands_on_a_recording_of_the_running_stack(tiny_checkpoint, tmp_path):
    """`adawm record` beside the embedded stack (the planner in lockstep with the bridge, two episodes),
    then the three commands on what it wrote."""
    import time

    import rclpy
    from carla_msgs.msg import CarlaEgoVehicleControl
    from rclpy.context import Context

    import node_procs
    from adawm_planner.nodes import bag, qos
    log = open(tmp_path / 'nodes.log', 'w')
    context = Context()
    rclpy.init(context=context)
    watcher = rclpy.create_node('dataset_test_watcher', context=context)
    procs = [subprocess.Popen([sys.executable, '-m', 'adawm_planner.cli', 'record', str(tmp_path / 'bag')],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)]
    try:   # every wait is for an event, with room for a busy machine
        end = time.monotonic() + 120
        while 'adawm_recorder' not in watcher.get_node_names() and time.monotonic() < end:
            time.sleep(0.1)
        assert 'adawm_recorder' in watcher.get_node_names(), (tmp_path / 'nodes.log').read_text()[-2000:]
        # The recorder subscribes to a topic once it sees a publisher of it, while the lockstep runs as fast as the
        # planner answers: a topic discovered seconds late on a loaded machine misses whole episodes. So every
        # topic is recorded before the planner starts: the bridge comes first (without a planner it steps once
        # per command_timeout), and the commands' publisher is stood in for until the planner's joins it.
        command_topic = '/carla/ego_vehicle/vehicle_control_cmd'
        watcher.create_publisher(CarlaEgoVehicleControl, command_topic, qos.STREAM)
        bridge = node_procs.start_node('sim_bridge_node', {'wait_for_command': 'true', 'max_episodes': 2, 'seed': 7,
                                                           'command_timeout': 5.0}, log)
        procs.append(bridge)
        planner_topics = {'/adawm/mismatch', '/adawm/adapter_status', '/diagnostics'}
        wanted = [t for t in bag.DEFAULT_TOPICS if t not in planner_topics]

        def unrecorded():
            return [t for t in wanted if not any(info.node_name == 'adawm_recorder'
                                                 for info in watcher.get_subscriptions_info_by_topic(t))]
        end = time.monotonic() + 120
        while unrecorded() and time.monotonic() < end:
            time.sleep(0.1)
        assert not unrecorded(), (unrecorded(), (tmp_path / 'nodes.log').read_text()[-2000:])
        procs.append(node_procs.start_node('planner_node', {'checkpoint': tiny_checkpoint, 'mode': 'actor'}, log))
        assert bridge.wait(timeout=600) == 0, (tmp_path / 'nodes.log').read_text()[-2000:]
    finally:
        node_procs.stop_nodes(procs)
        watcher.destroy_node()
        rclpy.try_shutdown(context=context)

    def adawm(*args):
        result = subprocess.run([sys.executable, '-m', 'adawm_planner.cli', *map(str, args)], capture_output=True,
                                text=True, timeout=300, cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    adawm('dataset', 'bag', '--checkpoint', tiny_checkpoint, '--out', 'ds')
    manifest = json.loads((tmp_path / 'ds/dataset.json').read_text())
    # two episodes (an episode the untrained agent drives until its time runs out ends unterminated; one the
    # bridge stepped on without a command for a second can be cut in two by the gap)
    assert manifest['segments'] >= 2 and manifest['steps'] >= 100, manifest['sources']
    adawm('pretrain', '--dataset', 'ds', '--preset', 'tiny', '--updates', 100, '--eval-every', 100, '--out', 'run',
          '--no-progress')
    with open(tmp_path / 'run/scalars.csv') as f:
        errors = [float(v) for _, k, v in csv.reader(f) if k == 'heldout/bev_prediction_error']
    assert errors[-1] < errors[0], errors   # the held-out tail is predicted better than by the untrained model
    out = adawm('finetune', '--dataset', 'ds', '--checkpoint', 'run/checkpoint', '--window', 16, '--out', 'ft')
    assert 'adawm offline on ds' in out and (tmp_path / 'ft/model_adapter.safetensors').is_file()

    # the checkpoint pretrained from the recording loads into the planner node, which comes up and reports
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor

    context = Context()
    rclpy.init(context=context)
    watcher = rclpy.create_node('dataset_test_watcher', context=context)
    reports = []
    watcher.create_subscription(DiagnosticArray, '/diagnostics', reports.append, qos.EVENTS_IN)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(watcher)
    planner = node_procs.start_node('planner_node', {'checkpoint': tmp_path / 'run/checkpoint'}, log)
    try:
        end = time.monotonic() + 120
        while not reports and time.monotonic() < end and planner.poll() is None:
            executor.spin_once(timeout_sec=0.1)
        assert reports and planner.poll() is None, (tmp_path / 'nodes.log').read_text()[-2000:]
    finally:
        node_procs.stop_nodes([planner])
        watcher.destroy_node()
        rclpy.try_shutdown(context=context)


@pytest.mark.parametrize('args, message', [
    (['dataset', 'nowhere', '--out', 'OUT'], 'no recording at nowhere'),
    (['pretrain', '--dataset', 'nowhere', '--updates', '5'], 'not found'),
    (['pretrain', '--dataset', 'nowhere'], '--dataset needs --updates'),
    (['pretrain', '--dataset', 'nowhere', '--updates', '5', '--task', 'right_turn'],
     'not used with --dataset (the data sets task and contract): --task'),
    (['finetune', '--checkpoint', 'CKPT', '--dataset', 'nowhere'], 'not found'),
    (['pretrain', '--dataset', 'nowhere', '--updates', '5', '--behaviour-cloning', '-1'],
     '--behaviour-cloning must be 0 or more'),
    (['pretrain', '--steps', '10', '--behaviour-cloning', '1'], '--behaviour-cloning is for --dataset'),
])
def test_refusals(args, message, tiny_checkpoint, tmp_path, monkeypatch, capsys):
    from adawm_planner import cli
    args = [str(tiny_checkpoint) if a == 'CKPT' else str(tmp_path / 'out') if a == 'OUT' else a for a in args]
    monkeypatch.chdir(tmp_path)   # in-process: `adawm` as the shell runs it, without a fresh interpreter each
    try:
        code = cli.main(args)
    except SystemExit as exit_:
        code = exit_.code
    stderr = capsys.readouterr().err
    assert code == 2 and message in stderr and len(stderr.splitlines()) == 1, stderr
