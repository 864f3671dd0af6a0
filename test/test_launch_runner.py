"""`adawm launch` runs ROS 2 XML launch files: args, conditions, includes, params, remaps, clean shutdown."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from adawm_planner import launch_runner
from adawm_planner.launch_runner import LaunchError

pytestmark = pytest.mark.ros

PROBE_NODE = textwrap.dedent('''\
    #!{python}
    """A real rclpy node that reports how the launch file configured it, then spins."""
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from std_msgs.msg import String
    rclpy.init()
    node = rclpy.create_node('probe')
    greeting = node.declare_parameter('greeting', 'none').value
    rate = node.declare_parameter('rate', 0.0).value
    pub = node.create_publisher(String, 'chatter', 10)
    print(f'PROBE {{node.get_fully_qualified_name()}} greeting={{greeting}} rate={{rate}} topic={{pub.topic_name}}',
          flush=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    print(f'PROBE {{node.get_name()}} stopped', flush=True)
    rclpy.try_shutdown()
''')


@pytest.fixture
def prefix(tmp_path, monkeypatch):
    """An ament prefix holding a package `launch_probe` with one node executable and two launch files."""
    root = tmp_path / 'prefix'
    (root / 'share/ament_index/resource_index/packages').mkdir(parents=True)
    (root / 'share/ament_index/resource_index/packages/launch_probe').touch()
    exe = root / 'lib/launch_probe/probe'
    exe.parent.mkdir(parents=True)
    exe.write_text(PROBE_NODE.format(python=sys.executable))
    exe.chmod(0o755)
    launch_dir = root / 'share/launch_probe/launch'
    launch_dir.mkdir(parents=True)
    (launch_dir / 'inner.launch.xml').write_text(textwrap.dedent('''\
        <launch>
          <arg name="who" default="nobody"/>
          <node pkg="launch_probe" exec="probe" name="inner_$(var who)">
            <param name="greeting" value="hello $(var who)"/>
          </node>
        </launch>'''))
    (launch_dir / 'main.launch.xml').write_text(textwrap.dedent('''\
        <launch>
          <arg name="sim" default="embedded" description="embedded or carla"/>
          <arg name="rate" default="20.0"/>
          <arg name="label" default=""/>
          <group if="$(eval '\\'$(var sim)\\' == \\'embedded\\'')">
            <node pkg="launch_probe" exec="probe" name="embedded_bridge" namespace="/demo">
              <param name="rate" value="$(var rate)"/>
              <param name="greeting" value="$(var label)"/>
              <remap from="chatter" to="/remapped/chatter"/>
            </node>
          </group>
          <group unless="$(eval '\\'$(var sim)\\' == \\'embedded\\'')">
            <include file="$(find-pkg-share launch_probe)/launch/inner.launch.xml">
              <arg name="who" value="carla"/>
            </include>
          </group>
        </launch>'''))
    monkeypatch.setenv('AMENT_PREFIX_PATH', str(root))
    return root


def test_load_resolves_args_conditions_and_includes(prefix):
    main = prefix / 'share/launch_probe/launch/main.launch.xml'
    [bridge] = launch_runner.load(main, {})
    assert (bridge.name, bridge.namespace) == ('embedded_bridge', '/demo')
    assert bridge.params == [('rate', '20.0'), ('greeting', '')] and bridge.remaps == [('chatter', '/remapped/chatter')]
    [inner] = launch_runner.load(main, {'sim': 'carla', 'rate': '10.0'})
    assert inner.name == 'inner_carla' and inner.params == [('greeting', 'hello carla')]


def test_load_refuses_what_it_cannot_honour(prefix, tmp_path):
    main = prefix / 'share/launch_probe/launch/main.launch.xml'
    with pytest.raises(LaunchError, match='unknown launch argument'):
        launch_runner.load(main, {'simm': 'carla'})
    odd = tmp_path / 'odd.launch.xml'
    odd.write_text('<launch><executable cmd="ls"/></launch>')
    with pytest.raises(LaunchError, match='<executable> is not supported'):
        launch_runner.load(odd, {})
    odd.write_text('<launch><arg name="needed"/></launch>')
    with pytest.raises(LaunchError, match="'needed' is required"):
        launch_runner.load(odd, {})
    odd.write_text('<launch><arg name="sim" default="embedded"><choice value="embedded"/><choice value="carla"/>'
                   '</arg></launch>')
    assert launch_runner.load(odd, {'sim': 'carla'}) == []
    with pytest.raises(LaunchError, match="sim:='bogus' is not one of: embedded, carla"):
        launch_runner.load(odd, {'sim': 'bogus'})
    odd.write_text('<launch><node pkg="launch_probe" exec="missing"/></launch>')
    with pytest.raises(LaunchError, match="'missing' of package 'launch_probe' not found"):
        launch_runner.load(odd, {})[0].command(tmp_path)


def test_adawm_launch_starts_real_nodes_and_sigterm_stops_them(prefix):
    """Typed parameters arrive typed (rate a float), an empty string arrives empty, remaps apply."""
    main = prefix / 'share/launch_probe/launch/main.launch.xml'
    runner = subprocess.Popen([sys.executable, '-m', 'adawm_planner.cli', 'launch', str(main), 'rate:=5.5'],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ),
                              start_new_session=True)
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = runner.stdout.readline()
        lines.append(line)
        if line.startswith('PROBE /demo/embedded_bridge'):
            break
    assert lines[-1].strip() == 'PROBE /demo/embedded_bridge greeting= rate=5.5 topic=/remapped/chatter', lines
    runner.send_signal(signal.SIGTERM)
    out, _ = runner.communicate(timeout=30)
    assert runner.returncode == 0
    assert 'PROBE embedded_bridge stopped' in out


def test_the_shipped_launch_file_refuses_a_wrong_choice_by_name(capsys):
    from adawm_planner.share import package_share
    code = launch_runner.main(str(package_share() / 'launch/adawm.launch.xml'), ['sim:=bogus'])
    err = capsys.readouterr().err
    assert code == 2 and "sim:='bogus' is not one of: embedded, carla" in err, err
