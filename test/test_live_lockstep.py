"""The bridge's wait_for_adaptation over real DDS: in lockstep the adaptation node skips no finetuning step
however slow its steps are next to the planner's answers, and a dead adaptation node does not freeze the
simulation.

The planner answers in actor mode (milliseconds) and the adaptation node finetunes the shipped `small` model
after every model step (hundreds of ms each): without waiting, the node would skip most of the steps asked
for; with it, none."""
import functools
import os
import signal

import pytest

import node_procs
from node_procs import start_node, stop_nodes

pytestmark = pytest.mark.ros



def watch(context, frames, progress):
    import rclpy
    from diagnostic_msgs.msg import DiagnosticStatus
    from nav_msgs.msg import Odometry
    from rclpy.executors import SingleThreadedExecutor

    from adawm_planner.nodes import qos
    from adawm_planner.nodes.convert import stamp_seconds
    from adawm_planner.nodes.progress import TOPIC
    node = rclpy.create_node('lockstep_watcher', context=context)
    node.create_subscription(Odometry, '/carla/ego_vehicle/odometry',
                             lambda m: frames.append(stamp_seconds(m.header.stamp)), qos.SENSOR_IN)
    node.create_subscription(DiagnosticStatus, TOPIC,
                             lambda m: progress.append({kv.key: float(kv.value) for kv in m.values}), qos.EVENTS_IN)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    return executor


def finetune_task():
    from adawm_planner.sim import default_pair, shift_pairs
    return shift_pairs()[default_pair()]['finetune']


def test_lockstep_bridge_waits_for_every_finetuning_step(tmp_path):
    import rclpy
    from rclpy.context import Context

    log_path = tmp_path / 'nodes.log'
    log = open(log_path, 'w')
    procs = [start_node('sim_bridge_node', {'task': finetune_task(), 'wait_for_command': 'true',
                                            'wait_for_adaptation': 'true'}, log),
             # as launched with lockstep:=true: a simulation held for the adaptation node is not stale
             start_node('planner_node', {'mode': 'actor', 'input_timeout': 120.0, 'use_sim_time': 'true'}, log),
             start_node('adaptation_node', {'train_every': 1, 'window': 32, 'push_every': 2, 'rollback_episodes': 0,
                                            'state_dir': tmp_path / 'state', 'use_sim_time': 'true'}, log)]
    context = Context()
    rclpy.init(context=context)
    frames, progress = [], []
    try:
        executor = watch(context, frames, progress)
        node_procs.spin_until(executor, lambda: progress and progress[-1]['finished'] >= 4, 300,
                              'four finetuning steps done', log_path)
    finally:
        stop_nodes(procs)
        rclpy.try_shutdown(context=context)
    last = progress[-1]
    assert last['skipped'] == 0, last   # every step asked for was taken: the bridge waited for each
    assert last['requested'] - last['finished'] <= 1, last   # slack 0: at most the one in progress
    # from the first frame it took on, the node took every frame (the bridge waited for that too)
    taken = sorted({p['frame'] for p in progress if p['frame'] >= 0})
    gaps = {round(b - a, 3) for a, b in zip(taken, taken[1:])}
    assert gaps <= {0.05, 0.1}, sorted(gaps)   # 0.1: an episode's last frame, published together with the reset
    assert 'stepping without it' not in log_path.read_text()
    assert all(p.returncode == 0 for p in procs), log_path.read_text()[-3000:]


def test_lockstep_bridge_steps_on_past_a_dead_adaptation_node(tiny_checkpoint, tmp_path):
    import rclpy
    from rclpy.context import Context

    log_path = tmp_path / 'nodes.log'
    log = open(log_path, 'w')
    bridge = start_node('sim_bridge_node', {'task': finetune_task(), 'wait_for_command': 'true',
                                            'wait_for_adaptation': 'true', 'adaptation_timeout': 3.0}, log)
    planner = start_node('planner_node', {'checkpoint': tiny_checkpoint, 'mode': 'actor', 'input_timeout': 120.0,
                                          'use_sim_time': 'true'}, log)
    adaptation = start_node('adaptation_node', {'checkpoint': tiny_checkpoint, 'rollback_episodes': 0,
                                                'state_dir': tmp_path / 'state', 'use_sim_time': 'true'}, log)
    context = Context()
    rclpy.init(context=context)
    frames, progress = [], []
    try:
        executor = watch(context, frames, progress)
        spin_until = functools.partial(node_procs.spin_until, executor, log_path=log_path)
        spin_until(lambda: len([p for p in progress if p['frame'] >= 0]) >= 20, 180, 'the node taking frames')
        os.killpg(adaptation.pid, signal.SIGKILL)
        adaptation.wait(timeout=30)
        killed_at = len(frames)
        spin_until(lambda: len(frames) >= killed_at + 100, 120, 'the simulation stepping on without the node')
    finally:
        stop_nodes([bridge, planner, adaptation])
        rclpy.try_shutdown(context=context)
    assert 'stepping without it until it reports again' in log_path.read_text()
    assert bridge.returncode == 0, log_path.read_text()[-3000:]
