"""The planner's parameters over real DDS, the way ros2/demos does them: every value checked (start values
too), a set_parameters_atomically call refused whole when any part fails — a good model adapter beside a bad
policy adapter leaves no trace — and what is accepted is applied."""
import os
import random
import subprocess
import sys
import time

import pytest

from test_planner_guard import planner_beside_bridge

pytestmark = pytest.mark.ros


def start(module, *params):
    args = [a for p in params for a in ('-p', p)]
    return subprocess.Popen([sys.executable, '-m', f'adawm_planner.nodes.{module}', '--ros-args', *args],
                            env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize('module, param, says', [
    ('planner_node', 'rate:=0.0', 'rate must be positive'),
    ('planner_node', 'input_timeout:=-1.0', 'input_timeout out of range'),   # the descriptor's range
    ('planner_node', 'mode:=dream', 'mode must be one of plan, actor'),
    ('adaptation_node', 'strategy:=bogus', 'strategy must be one of adawm'),
    ('adaptation_node', 'threshold_c:=0.0', 'threshold_c must be positive'),
    ('sim_bridge_node', 'speed:=0.0', 'speed must be positive'),
    ('sim_bridge_node', 'task:=no_such_task', "task: unknown task 'no_such_task'; known: right_turn"),
])
def test_a_bad_start_value_is_one_line_and_exit_1(module, param, says, tiny_checkpoint, tmp_path):
    proc = start(module, param, f'checkpoint:={tiny_checkpoint}', f'state_dir:={tmp_path}')
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, out
    assert says in out and 'Traceback' not in out, out
    assert len([line for line in out.splitlines() if 'invalid parameter' in line]) == 1, out


def test_a_knob_the_checkpoint_cannot_serve_is_one_line_and_exit_1(tiny_checkpoint, tmp_path):
    # the improvement view of ε_π needs its reference beside the checkpoint; the tiny one ships none
    proc = start('adaptation_node', 'policy_signal:=improvement', f'checkpoint:={tiny_checkpoint}',
                 f'state_dir:={tmp_path}')
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, out
    assert "policy_signal 'improvement' needs a mismatch reference" in out and 'Traceback' not in out, out


def adapters(checkpoint):
    """A real model adapter and a real policy adapter of the checkpoint (LoRA through the finetuner)."""
    from adawm_planner.core.adaptation import Finetuner
    from adawm_planner.core.checkpoint import load_checkpoint
    from adawm_planner.core.config import FinetuneConfig
    agent, _ = load_checkpoint(checkpoint)
    tuner = Finetuner(agent, FinetuneConfig(strategy='adawm'))
    return tuner.export_adapter('model', 1), tuner.export_adapter('policy', 2)


def adapter_params(target, adapter, sha256=None, key=b'the-key-of-this-run', signature=None):
    """The parameters of one adapter; signed with the key of this test run (ADAWM_KEY_FILE, the planner's
    per-user key) unless `key` is given — None: unsigned — or an explicit `signature`."""
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue

    from adawm_planner.core import lora
    if key == b'the-key-of-this-run':
        key, _ = lora.load_or_create_key(lora.default_key_file())
    params = [Parameter(name=f'adapter.{target}.data', value=ParameterValue(
                  type=ParameterType.PARAMETER_BYTE_ARRAY, byte_array_value=[bytes([b]) for b in adapter.blob])),
              Parameter(name=f'adapter.{target}.sha256', value=ParameterValue(
                  type=ParameterType.PARAMETER_STRING, string_value=sha256 or adapter.sha256)),
              Parameter(name=f'adapter.{target}.version', value=ParameterValue(
                  type=ParameterType.PARAMETER_INTEGER, integer_value=adapter.meta.version))]
    signature = signature or (lora.sign(adapter.blob, key) if key else None)
    if signature:
        params.append(Parameter(name=f'adapter.{target}.signature', value=ParameterValue(
            type=ParameterType.PARAMETER_STRING, string_value=signature)))
    return params


def value_params(**values):
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    kinds = {int: ('PARAMETER_INTEGER', 'integer_value'), float: ('PARAMETER_DOUBLE', 'double_value'),
             str: ('PARAMETER_STRING', 'string_value')}
    out = []
    for name, value in values.items():
        kind, field = kinds[type(value)]
        out.append(Parameter(name=name, value=ParameterValue(type=getattr(ParameterType, kind), **{field: value})))
    return out


def test_atomic_calls_are_checked_whole_and_applied_after(tiny_checkpoint):
    from adawm_msgs.msg import AdapterStatus
    from rcl_interfaces.srv import SetParametersAtomically

    from adawm_planner.nodes import qos

    model, policy = adapters(tiny_checkpoint)
    with planner_beside_bridge(tiny_checkpoint) as (node, bridge, executor):
        statuses = []
        node.create_subscription(AdapterStatus, '/adawm/adapter_status', statuses.append, qos.EVENTS_IN)
        client = node.create_client(SetParametersAtomically, '/planner_node/set_parameters_atomically')

        def drive(seconds):
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                bridge.frame()
                executor.spin_once(timeout_sec=0.05)

        def call(parameters):
            future = client.call_async(SetParametersAtomically.Request(parameters=parameters))
            executor.spin_until_future_complete(future, timeout_sec=60)
            assert future.done(), f'the planner did not answer {[(p.name, p.value) for p in parameters]}'
            return future.result().result

        assert client.wait_for_service(timeout_sec=60)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not bridge.commands:
            drive(0.1)
        assert bridge.commands, 'the planner never answered a frame'

        refused = call(adapter_params('model', model) + adapter_params('policy', policy, sha256='0' * 64))
        assert not refused.successful and 'policy adapter rejected: sha256 mismatch' in refused.reason
        drive(1.5)
        applied = lambda: [s for s in statuses if s.state == AdapterStatus.STATE_APPLIED]
        assert not applied(), 'the model adapter of a refused call was applied'
        assert bridge.diagnostics_values()['model_adapter_version'] == '0'

        # a foreign node with a well-formed adapter but not the key: unsigned and mis-signed are both refused
        refused = call(adapter_params('model', model, key=None))
        assert not refused.successful and 'unsigned' in refused.reason, refused.reason
        refused = call(adapter_params('model', model, key=b'some-other-key-of-16-bytes'))
        assert not refused.successful and 'signature does not verify' in refused.reason, refused.reason
        commands_before = len(bridge.commands)
        drive(1.0)
        assert len(bridge.commands) > commands_before and not applied()   # still commanding, still the base

        refused = call(value_params(input_timeout=0.0, candidates=4))
        assert not refused.successful and 'input_timeout must be positive' in refused.reason
        assert not call(value_params(adapter_dir='/')).successful   # start-only: no escape hatch for files

        # every declared parameter, values of every type: an answer each (applied, or refused with a reason)
        rng = random.Random(7)
        names = ['mode', 'candidates', 'horizon', 'rate', 'input_timeout', 'image_every', 'fault_hold', 'output',
                 'checkpoint', 'role_name', 'adapter_dir', 'adapter_key_file', 'allow_unsigned_adapters',
                 'adapter.model.version', 'adapter.policy.sha256', 'adapter.model.signature', 'adapter.policy.path']
        values = [0, -1, 3, 2 ** 40, 0.0, -2.5, float('nan'), float('inf'), 'plan', 'actor', '', '../../etc', 'x' * 300]
        for _ in range(25):
            answer = call(value_params(**{rng.choice(names): rng.choice(values)}))
            assert answer.successful or answer.reason, answer
        assert call(value_params(mode='actor', candidates=0, horizon=0, input_timeout=0.5, image_every=4)).successful

        assert call(adapter_params('model', model)).successful
        assert call(value_params(candidates=4, horizon=3, mode='plan')).successful
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (applied() and bridge.diagnostics_values().get('candidates') == '4'):
            drive(0.2)
        assert [(s.target, s.version) for s in applied()] == [(AdapterStatus.TARGET_MODEL, 1)]
        values = bridge.diagnostics_values()
        assert (values['candidates'], values['horizon'], values['mode']) == ('4', '3', 'plan'), values
        # what the deadline let it afford, reported: a horizon of at most 3 steps per decision
        assert values['budget_ms'] == '35' and values['afforded_horizon_p50'] in ('0', '1', '2', '3'), values
        assert values['model_adapter_version'] == '1' and values['policy_adapter_version'] == '0'


def test_accepting_unsigned_adapters_is_explicit_and_said(tiny_checkpoint):
    proc = start('planner_node', f'checkpoint:={tiny_checkpoint}', 'allow_unsigned_adapters:=true')
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if 'planning with' in line:
                break
    finally:
        proc.terminate()
        lines += proc.communicate(timeout=30)[0].splitlines()
    assert any('allow_unsigned_adapters is set' in line for line in lines), lines


def test_command_messages_carry_the_action_through_the_vehicle_model():
    """Every action as each output kind, and back: the adaptation node reads what the planner meant."""
    from builtin_interfaces.msg import Time

    from adawm_planner.core.actions import ActionTable
    from adawm_planner.nodes import convert
    table = ActionTable([-2.0, 0.0, 2.0], [-0.9, -0.3, 0.0, 0.3, 0.9])
    for kind in convert.OUTPUTS:
        for action in range(len(table)):
            control = table.control(action)
            msg = convert.command_msg(kind, control, 3.0, table, 0.1, Time(sec=1))
            back = dict(zip(('throttle', 'steer', 'brake'), convert.control_of_msg(kind, msg, 3.0, table, 0.1)))
            assert table.index(back) == action, (kind, action, msg)
    acceleration, speed, angle = table.kinematics(table.control(14), 3.0, 0.1)   # +2 m/s², steer 0.9 right
    assert (acceleration, speed) == pytest.approx((2.0, 3.2)) and angle == pytest.approx(-0.9 * table.max_steer_angle)
    assert table.kinematics(table.control(0), 0.1, 0.1)[1] == 0.0   # braking stops, never reverses


@pytest.mark.parametrize('kind', ['autoware', 'ackermann'])
def test_the_planner_speaks_other_stacks_commands(kind, tiny_checkpoint):
    """output:=autoware / ackermann over DDS: the command arrives in that stack's message on its topic, a safe
    stop as zero target speed at full deceleration, driving as a target speed the vehicle model reaches."""
    from adawm_planner.core.checkpoint import load_checkpoint
    from adawm_planner.nodes import convert, qos
    table = load_checkpoint(tiny_checkpoint)[1]['contract'].action_table()
    with planner_beside_bridge(tiny_checkpoint, f'output:={kind}') as (node, bridge, executor):
        received = []
        node.create_subscription(convert.output_type(kind), convert.OUTPUTS[kind][1], received.append, qos.SENSOR_IN)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and (len(received) < 40 or moving(kind, received[-1]) == 0):
            bridge.frame()
            executor.spin_once(timeout_sec=0.05)
        assert len(received) >= 40 and not bridge.commands, 'no command, or a CARLA command beside it'
    if kind == 'autoware':
        speeds = [m.longitudinal.velocity for m in received]
        accelerations = [m.longitudinal.acceleration for m in received]
        assert all(m.longitudinal.is_defined_acceleration for m in received)
        angles = [m.lateral.steering_tire_angle for m in received]
    else:
        speeds = [m.drive.speed for m in received]
        accelerations = [m.drive.acceleration for m in received]
        angles = [m.drive.steering_angle for m in received]
    assert all(s >= 0 for s in speeds) and all(abs(a) <= table.pedal_acceleration for a in accelerations)
    assert all(abs(a) <= table.max_steer_angle + 1e-6 for a in angles)
    assert speeds[0] == 0.0 and abs(accelerations[0]) == table.pedal_acceleration   # the start-up safe stop
    assert speeds[-1] > 0, 'the planner never asked to move'


def moving(kind, msg):
    return msg.longitudinal.velocity if kind == 'autoware' else msg.drive.speed


def test_the_launch_files_mode_default_is_the_nodes():
    """The launch line's `mode` arg passes a value on to the node, so it must default to the node's own."""
    import xml.etree.ElementTree as ET
    from adawm_planner.core.config import PlannerConfig
    from adawm_planner.share import package_share
    root = ET.parse(package_share() / 'launch' / 'adawm.launch.xml').getroot()
    arg = next(a for a in root.iter('arg') if a.get('name') == 'mode')
    assert arg.get('default') == PlannerConfig().mode
    assert {c.get('value') for c in arg.iter('choice')} == {'actor', 'plan'}
