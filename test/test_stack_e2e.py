"""The whole stack over real DDS from the launch file: embedded bridge, planner, adaptation (tiny preset)."""
import os
import signal
import subprocess
import sys
import time

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
    stack = subprocess.Popen([sys.executable, '-m', 'adawm_planner.cli', 'launch', str(launch_file), 'sim:=embedded',
                              f'task:={task}', f'checkpoint:={tiny_checkpoint}', 'adapt:=true'],
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
