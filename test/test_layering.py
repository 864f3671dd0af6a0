"""The architecture's lines, checked: core imports neither the simulator nor nodes nor runners; sim imports no
ROS and no nodes; the planner node's input path runs with the simulator packages unimportable."""
import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / 'adawm_planner'
ROS = ('rclpy', 'std_msgs', 'nav_msgs', 'sensor_msgs', 'geometry_msgs', 'carla_msgs', 'adawm_msgs',
       'derived_object_msgs', 'diagnostic_msgs', 'visualization_msgs', 'rcl_interfaces', 'rosbags')
FORBIDDEN = {
    'core': ROS + ('adawm_planner.sim', 'adawm_planner.nodes', 'adawm_planner.experiments', 'adawm_planner.analyze',
                   'gymnasium', 'highway_env', 'tqdm', 'matplotlib'),
    'sim': ROS + ('adawm_planner.nodes', 'adawm_planner.experiments'),
    'experiments': ROS + ('adawm_planner.nodes',),
}


def imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize('layer', sorted(FORBIDDEN))
def test_layer_imports_stay_inside_their_bounds(layer):
    leaks = [f'{path.relative_to(PACKAGE)} imports {name}'
             for path in sorted((PACKAGE / layer).rglob('*.py')) for name in sorted(imports(path))
             if any(name == bad or name.startswith(bad + '.') for bad in FORBIDDEN[layer])]
    assert not leaks, '\n'.join(leaks)


@pytest.mark.ros
def test_planner_input_path_runs_without_the_simulator(tiny_checkpoint, tmp_path):
    """Messages -> Scene -> model step -> action -> command, as planner_node does it, in a process where
    gymnasium, highway_env and adawm_planner.sim cannot be imported (a real CARLA machine need not have them).
    The messages come from a drive recorded beforehand in this process, where the simulator exists."""
    from rclpy.serialization import serialize_message
    from std_msgs.msg import String

    from adawm_planner.core.opendrive import to_opendrive
    from adawm_planner.nodes import convert
    from adawm_planner.sim import default_task, make_env

    env = make_env(default_task(), seed=5, dt=0.05)
    env.reset(seed=5)
    sim = env.unwrapped
    wire = tmp_path / 'wire'
    wire.mkdir()
    (wire / 'map').write_bytes(serialize_message(String(data=to_opendrive(sim.scene().lanes))))
    (wire / 'route').write_bytes(serialize_message(convert.route_msg(sim.scene().route, 0.0)))
    for i in range(6):
        sim.step_control(0.5, 0.0, 0.0)
        scene, stamp = sim.scene(), 0.05 * (i + 1)
        (wire / f'{i}.objects').write_bytes(serialize_message(convert.objects_msg(scene.agents, stamp)))
        (wire / f'{i}.odometry').write_bytes(serialize_message(convert.odometry_msg(scene.ego, stamp, 'ego_vehicle')))

    program = f'''
import sys
for name in ('gymnasium', 'highway_env', 'adawm_planner.sim'):
    sys.modules[name] = None   # any import of these now fails
from pathlib import Path
from rclpy.serialization import deserialize_message
from derived_object_msgs.msg import ObjectArray
from nav_msgs.msg import Odometry, Path as PathMsg
from std_msgs.msg import String
import adawm_planner.nodes.planner_node   # the node module itself imports without the simulator
from adawm_planner.core.checkpoint import load_checkpoint
from adawm_planner.core.pipeline import StepPipeline
from adawm_planner.nodes import convert
wire = Path({str(wire)!r})
agent, meta = load_checkpoint({str(tiny_checkpoint)!r})
inputs, pipeline = convert.InputState(), StepPipeline(meta['contract'])
table = meta['contract'].action_table()
inputs.on_map(deserialize_message((wire / 'map').read_bytes(), String))
inputs.on_route(deserialize_message((wire / 'route').read_bytes(), PathMsg))
state, commands = None, []
for i in range(6):
    inputs.on_objects(deserialize_message((wire / f'{{i}}.objects').read_bytes(), ObjectArray))
    inputs.on_odometry(deserialize_message((wire / f'{{i}}.odometry').read_bytes(), Odometry))
    stamp = inputs.frame(wall_now=float(i))
    assert inputs.problem(float(i), 1.0) is None, inputs.problem(float(i), 1.0)
    step = pipeline.step(stamp, inputs.scene())
    if step is not None:
        action, state, _ = agent.act(step.obs, None if step.is_first else state, 'plan')
        commands.append(table.control(action))
assert len(commands) == 3, commands
assert not any(m in sys.modules for m in ('gymnasium', 'highway_env')) or sys.modules['gymnasium'] is None
print('ok', commands[-1])
'''
    result = subprocess.run([sys.executable, '-c', program], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ))
    assert result.returncode == 0 and result.stdout.startswith('ok'), result.stdout + result.stderr
