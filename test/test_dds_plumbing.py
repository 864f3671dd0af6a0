"""Real rclpy over real Fast DDS, across processes, on loopback only."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros

PEER = Path(__file__).with_name('ros_peer.py')


@pytest.fixture
def ros_context():
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context)
    yield context
    rclpy.try_shutdown(context=context)


@pytest.fixture
def peer():
    """Starts `ros_peer.py ROLE` as a separate process; stops it (SIGINT, then kill) afterwards."""
    procs = []

    def start(role):
        proc = subprocess.Popen([sys.executable, str(PEER), role], stdout=subprocess.PIPE, text=True,
                                env=dict(os.environ))
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.send_signal(subprocess.signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def spin_until(context, node, predicate, timeout_s):
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    executor.remove_node(node)
    return predicate()


def test_loopback_only_environment():
    assert os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] == 'LOCALHOST'
    assert 0 <= int(os.environ['ROS_DOMAIN_ID']) <= 101


def test_control_and_mismatch_report_cross_processes(ros_context, peer):
    from adawm_msgs.msg import MismatchReport
    from carla_msgs.msg import CarlaEgoVehicleControl
    from rclpy.node import Node

    node = Node('plumbing_subscriber', context=ros_context)
    controls, reports = [], []
    node.create_subscription(CarlaEgoVehicleControl, '/carla/ego_vehicle/vehicle_control_cmd', controls.append, 10)
    node.create_subscription(MismatchReport, '/adawm/mismatch', reports.append, 10)
    peer('publish-control')

    assert spin_until(ros_context, node, lambda: len(controls) >= 5 and len(reports) >= 5, timeout_s=30), \
        f'received {len(controls)} controls and {len(reports)} reports from the other process'
    assert controls[-1].throttle == pytest.approx(0.5) and controls[-1].steer == pytest.approx(-0.25)
    assert [c.gear for c in controls] == sorted(c.gear for c in controls)  # in order, counting up
    assert reports[-1].decision == MismatchReport.DECISION_UPDATE_POLICY
    assert reports[-1].model_mismatch == pytest.approx(0.4)
    node.destroy_node()


def test_parameter_set_across_processes_is_validated(ros_context, peer):
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.parameter_client import AsyncParameterClient

    proc = peer('param-node')
    assert proc.stdout.readline().strip() == 'READY'
    node = Node('plumbing_param_client', context=ros_context)
    client = AsyncParameterClient(node, 'plumbing_param_node')
    assert spin_until(ros_context, node, lambda: client.services_are_ready(), timeout_s=30), \
        'parameter services of the other process never appeared'

    def set_and_wait(value):
        future = client.set_parameters([Parameter('planning_horizon', value=value)])
        assert spin_until(ros_context, node, future.done, timeout_s=10)
        return future.result().results[0]

    accepted = set_and_wait(32)
    assert accepted.successful, accepted.reason
    rejected = set_and_wait(500)
    assert not rejected.successful
    assert rejected.reason == 'planning_horizon must be in 1..64, got 500'

    future = client.get_parameters(['planning_horizon'])
    assert spin_until(ros_context, node, future.done, timeout_s=10)
    assert future.result().values[0].integer_value == 32  # the rejected value did not land
    node.destroy_node()
