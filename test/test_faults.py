"""Faults over real DDS: signed adapters only, adaptation node killed and restarted, simulator restarted.
The planner keeps driving through all of it."""
import functools
import os
import signal

import pytest

import node_procs
from node_procs import start_node, stop_nodes

pytestmark = pytest.mark.ros


def test_faults(tiny_checkpoint, tmp_path):
    import rclpy
    from adawm_msgs.msg import AdapterStatus
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParametersAtomically
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor

    from adawm_planner.nodes.monitor import StackMonitor
    from adawm_planner.sim import default_pair, shift_pairs

    key_file = tmp_path / 'adapter.key'
    key_file.write_text('a-shared-secret-of-some-length\n')
    task = shift_pairs()[default_pair()]['finetune']
    log = open(tmp_path / 'nodes.log', 'w')
    bridge = start_node('sim_bridge_node', {'task': task}, log)
    planner = start_node('planner_node', {'checkpoint': tiny_checkpoint, 'adapter_key_file': key_file,
                                          'mode': 'actor'}, log)
    adaptation_params = {'checkpoint': tiny_checkpoint, 'adapter_key_file': key_file, 'push_every': 3,
                         'rollback_episodes': 0, 'state_dir': tmp_path / 'state', 'use_sim_time': 'true'}
    adaptation = start_node('adaptation_node', adaptation_params, log)
    procs = [bridge, planner, adaptation]
    context = Context()
    rclpy.init(context=context)
    try:
        monitor = StackMonitor(context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(monitor)

        spin_until = functools.partial(node_procs.spin_until, executor, log_path=tmp_path / 'nodes.log')

        def applied_versions():
            return {s.version for s in monitor.statuses if s.state == AdapterStatus.STATE_APPLIED}

        # 1. signed adapters from the adaptation node are applied
        spin_until(lambda: applied_versions(), 90, 'a signed adapter applied')
        # 2. an unsigned one is refused
        client = monitor.create_client(SetParametersAtomically, '/planner_node/set_parameters_atomically')
        assert client.wait_for_service(timeout_sec=10)
        blob = (tmp_path / 'state').glob('*.safetensors').__next__().read_bytes()
        import hashlib
        future = client.call_async(SetParametersAtomically.Request(parameters=[
            Parameter(name='adapter.model.data', value=ParameterValue(
                type=ParameterType.PARAMETER_BYTE_ARRAY, byte_array_value=[bytes([b]) for b in blob])),
            Parameter(name='adapter.model.sha256', value=ParameterValue(
                type=ParameterType.PARAMETER_STRING, string_value=hashlib.sha256(blob).hexdigest())),
            Parameter(name='adapter.model.signature', value=ParameterValue(
                type=ParameterType.PARAMETER_STRING, string_value='00' * 32)),
            Parameter(name='adapter.model.version', value=ParameterValue(
                type=ParameterType.PARAMETER_INTEGER, integer_value=1))]))
        spin_until(future.done, 10, 'an answer to the mis-signed adapter')
        assert not future.result().result.successful
        assert 'signature does not verify' in future.result().result.reason

        # 3. the adaptation node dies mid-run: the planner keeps driving on its adapter
        os.killpg(adaptation.pid, signal.SIGKILL)
        adaptation.wait()
        commands_before = len(monitor.command_stamps)
        version_before = monitor.diagnostics.get('model_adapter_version')
        spin_until(lambda: len(monitor.command_stamps) > commands_before + 60, 30, 'commands after the kill')
        assert monitor.diagnostics.get('message') == 'planning'
        assert planner.poll() is None

        # 4. restarted, it resumes its version counter: no version is ever reused
        highest = max(applied_versions())
        adaptation = start_node('adaptation_node', adaptation_params, log)
        procs.append(adaptation)
        spin_until(lambda: max(applied_versions()) > highest, 120, 'an adapter from the restarted node')
        assert version_before is not None

        # 5. the simulator restarts (time starts again at 0): the planner stops, resets and drives on
        os.killpg(bridge.pid, signal.SIGINT)
        bridge.wait(timeout=30)
        spin_until(lambda: 'stale' in monitor.diagnostics.get('message', ''), 10, 'a safe stop on stale inputs')
        commands_before = len(monitor.command_stamps)
        bridge = start_node('sim_bridge_node', {'task': task}, log)
        procs.append(bridge)
        spin_until(lambda: len(monitor.command_stamps) > commands_before + 40
                   and monitor.diagnostics.get('message') == 'planning', 60, 'planning after the simulator restart')
        assert planner.poll() is None
    finally:
        stop_nodes(procs)
        rclpy.try_shutdown(context=context)
    assert 'Traceback' not in (tmp_path / 'nodes.log').read_text()
