"""The whole stack over real DDS from the launch file: embedded bridge, planner, adaptation (tiny preset)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros

RUN_SECONDS = 45


def node_processes():
    out = subprocess.run(['ps', '-eo', 'pid,args'], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if '__node:=' in line and 'lib/adawm_planner' in line]


def test_launch_runs_plans_adapts_rejects_and_stops(tiny_checkpoint, tmp_path):
    import rclpy
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParametersAtomically
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor

    from adawm_planner.share import find_package_share
    from adawm_planner.nodes.monitor import StackMonitor
    from adawm_planner.sim import shift_pairs

    assert not node_processes(), 'stack nodes from an earlier run are still alive'
    task = next(iter(shift_pairs().values()))['finetune']
    launch_file = find_package_share('adawm_planner') / 'launch/adawm.launch.xml'
    env = dict(os.environ, ADAWM_STATE_DIR=str(tmp_path / 'state'))
    # the shipped adaptation parameters, but no rollback judge: it pushes an adapter only after episodes to
    # judge it against (test_rollback_live tests it), and 45 s hold few; here every push must be applied
    params = tmp_path / 'adaptation.yaml'
    shipped = (find_package_share('adawm_planner') / 'config/adaptation.yaml').read_text()
    params.write_text(shipped.rstrip('\n') + '\n    rollback_episodes: 0\n')
    # and the planner's own file through the launch argument: a budget the diagnostics must report
    planner_params = tmp_path / 'planner.yaml'
    shipped = (find_package_share('adawm_planner') / 'config/planner.yaml').read_text()
    planner_params.write_text(shipped.rstrip('\n') + '\n    budget_ms: 45.0\n')
    stack = subprocess.Popen([sys.executable, '-m', 'adawm_planner.cli', 'launch', str(launch_file), 'sim:=embedded',
                              f'task:={task}', f'checkpoint:={tiny_checkpoint}', 'adapt:=true',
                              f'adaptation_params:={params}', f'planner_params:={planner_params}'],
                             env=env, stdout=open(tmp_path / 'stack.log', 'w'), stderr=subprocess.STDOUT,
                             start_new_session=True)
    context = Context()
    rclpy.init(context=context)
    try:
        monitor = StackMonitor(context=context)
        client = monitor.create_client(SetParametersAtomically, '/planner_node/set_parameters_atomically')
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(monitor)
        started = time.monotonic()
        while time.monotonic() - started < RUN_SECONDS and stack.poll() is None:
            executor.spin_once(timeout_sec=0.1)
        assert stack.poll() is None, (tmp_path / 'stack.log').read_text()[-3000:]

        # a deliberately bad adapter: valid bytes of nothing this planner knows, with a wrong sha256
        assert client.wait_for_service(timeout_sec=10)
        blob = b'\x08\x00\x00\x00\x00\x00\x00\x00{}      '
        request = SetParametersAtomically.Request(parameters=[
            Parameter(name='adapter.policy.data', value=ParameterValue(
                type=ParameterType.PARAMETER_BYTE_ARRAY, byte_array_value=[bytes([b]) for b in blob])),
            Parameter(name='adapter.policy.sha256', value=ParameterValue(
                type=ParameterType.PARAMETER_STRING, string_value='0' * 64)),
            Parameter(name='adapter.policy.version', value=ParameterValue(
                type=ParameterType.PARAMETER_INTEGER, integer_value=999))])
        future = client.call_async(request)
        deadline = time.monotonic() + 10
        while not future.done() and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        answer = future.result().result
        for _ in range(20):
            executor.spin_once(timeout_sec=0.05)
        summary = monitor.summary()
        graph = {topic: set(types) for topic, types in monitor.get_topic_names_and_types()}
    finally:
        stack.send_signal(signal.SIGTERM)
        try:
            stack.wait(timeout=60)
        finally:
            rclpy.try_shutdown(context=context)

    log = (tmp_path / 'stack.log').read_text()
    assert stack.returncode == 0, log[-3000:]
    assert not node_processes(), 'SIGTERM left nodes running'
    assert summary['frames'] > 200, summary
    # once all three nodes work (the first mismatch report), commands answer ≥ 95 % of the frames
    assert summary['command_coverage_all_up'] >= 0.95, summary
    assert summary['mismatch_reports'] >= 2, summary
    assert summary['adapters'].get('applied', 0) >= 1, (summary, log[-3000:])
    assert not answer.successful and 'sha256 mismatch' in answer.reason
    assert any('sha256 mismatch' in reason for reason in summary['rejection_reasons']), summary
    assert summary['planner'].get('tick_latency_p99_ms'), summary
    assert summary['planner'].get('budget_ms') == '45', summary
    # what the shipped RViz view shows is what the stack publishes, topic and type
    for topic, msg_type in rviz_topics():
        assert msg_type in graph.get(topic, set()), (topic, msg_type, graph.get(topic))


RVIZ_DISPLAY_TYPES = {'rviz_default_plugins/Path': 'nav_msgs/msg/Path',
                      'rviz_default_plugins/Odometry': 'nav_msgs/msg/Odometry',
                      'rviz_default_plugins/MarkerArray': 'visualization_msgs/msg/MarkerArray',
                      'rviz_default_plugins/Image': 'sensor_msgs/msg/Image'}


def rviz_topics():
    """(topic, message type) of every display in the package's RViz config that subscribes to one."""
    import yaml

    from adawm_planner.share import package_share
    config = yaml.safe_load((package_share() / 'rviz/adawm.rviz').read_text())
    shown = [(d['Topic']['Value'], RVIZ_DISPLAY_TYPES[d['Class']])
             for d in config['Visualization Manager']['Displays'] if 'Topic' in d]
    assert len(shown) == 4, shown
    return shown


def test_rviz_true_adds_rviz2_with_the_package_view():
    from adawm_planner import launch_runner
    from adawm_planner.share import package_share
    launch_file = package_share() / 'launch/adawm.launch.xml'
    names = lambda nodes: [n.executable for n in nodes]
    assert 'rviz2' not in names(launch_runner.load(launch_file, {}))
    [rviz] = [n for n in launch_runner.load(launch_file, {'rviz': 'true'}) if n.executable == 'rviz2']
    assert rviz.args[0] == '-d' and Path(rviz.args[1]).is_file() and rviz.args[1].endswith('rviz/adawm.rviz')
