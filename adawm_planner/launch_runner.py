"""`adawm launch FILE [arg:=value ...]`: runs the subset of ROS 2 XML launch files this project uses.

The ROS 2 launch system is not installable from PyPI, so on machines without a ROS installation this runner
reads the same launch/*.launch.xml that `ros2 launch` reads, with the same meaning, for these elements:
<launch>, <arg name default description> with <choice value/> (a value outside the choices stops the launch),
<let name value>, <node pkg exec name namespace args output>
with <param name value/>, <param from="file.yaml"/> and <remap from to/>, <include file> with <arg name
value/>, <group> (scoped), and `if`/`unless` on any of them; substitutions $(var), $(env NAME [default]),
$(find-pkg-share PKG), $(dirname) and $(eval EXPR) where EXPR is a literal comparison ('a' == 'b', !=,
and, or, not). Anything else is refused by name, never silently skipped.

Nodes are found as `ros2 run` finds them, at <prefix>/lib/<pkg>/<exec> for each prefix on
AMENT_PREFIX_PATH (the venv itself is one). Every node runs in its own process group; Ctrl-C / SIGTERM to
the runner sends SIGINT to every node, then SIGTERM, then SIGKILL to what is left, so none outlives it.
"""
from __future__ import annotations

import ast
import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

from adawm_planner import share


class LaunchError(RuntimeError):
    pass


@dataclasses.dataclass
class NodeSpec:
    package: str
    executable: str
    name: str | None = None
    namespace: str | None = None
    params: list[tuple[str, str]] = dataclasses.field(default_factory=list)   # (name, YAML value)
    param_files: list[str] = dataclasses.field(default_factory=list)
    remaps: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    args: list[str] = dataclasses.field(default_factory=list)

    def command(self, params_dir: str | Path) -> list[str]:
        """The node's command line. Inline <param>s go through a generated params file, as ros2 launch does:
        values keep their YAML types, and an empty string stays an empty string (`-p name:=` is an rcl error)."""
        cmd = [find_executable(self.package, self.executable), *self.args, '--ros-args']
        if self.name:
            cmd += ['-r', f'__node:={self.name}']
        if self.namespace:
            cmd += ['-r', f'__ns:={self.namespace}']
        for path in self.param_files:
            cmd += ['--params-file', path]
        if self.params:
            values = {name: '' if not value.strip() else yaml.safe_load(value) for name, value in self.params}
            path = Path(params_dir) / f'{self.name or self.executable}_{id(self)}.yaml'
            path.write_text(yaml.safe_dump({'/**': {'ros__parameters': values}}))
            cmd += ['--params-file', str(path)]
        for src, dst in self.remaps:
            cmd += ['-r', f'{src}:={dst}']
        return cmd


def find_package_share(package: str) -> Path:
    try:
        return share.find_package_share(package)
    except LookupError as exc:
        raise LaunchError(str(exc)) from None


def find_executable(package: str, executable: str) -> str:
    for prefix in share.ament_prefixes():
        candidate = prefix / 'lib' / package / executable
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise LaunchError(f'executable {executable!r} of package {package!r} not found under <prefix>/lib/{package}/')


_SUBST = re.compile(r'\$\(([a-z-]+)((?:[^()]|\([^()]*\))*)\)')


class Context:
    def __init__(self, arguments: dict[str, str]):
        self.vars: dict[str, str] = {}
        self.cli_args = dict(arguments)
        self.file_stack: list[Path] = []

    def substitute(self, text: str) -> str:
        # innermost first: $(eval '$(var a)' == 'x') needs $(var a) resolved before eval runs
        while True:
            match = _SUBST.search(text)
            if not match:
                return text
            inner = match.group(2)
            if '$(' in inner:
                text = text[:match.start(2)] + self.substitute(inner) + text[match.end(2):]
                continue
            text = text[:match.start()] + self._one(match.group(1), inner.strip()) + text[match.end():]

    def _one(self, kind: str, body: str) -> str:
        if kind == 'var':
            if body not in self.vars:
                raise LaunchError(f'$(var {body}) is not defined (declare it with <arg name="{body}" .../>)')
            return self.vars[body]
        if kind == 'env':
            name, _, default = body.partition(' ')
            value = os.environ.get(name, _unquote(default) if default else None)
            if value is None:
                raise LaunchError(f'$(env {name}) is not set and has no default')
            return value
        if kind == 'find-pkg-share':
            return str(find_package_share(body))
        if kind == 'dirname':
            return str(self.file_stack[-1].parent)
        if kind == 'eval':
            return str(_literal_eval(_unquote(body)))
        raise LaunchError(f'substitution $({kind} ...) is not supported by `adawm launch`')

    def condition(self, element: ET.Element) -> bool:
        for attr, want in (('if', True), ('unless', False)):
            if attr in element.attrib:
                value = self.substitute(element.attrib[attr]).strip().lower()
                if value not in ('true', 'false', '1', '0'):
                    raise LaunchError(f'{attr}="{element.attrib[attr]}" gave {value!r}, not a boolean')
                if (value in ('true', '1')) != want:
                    return False
        return True


def _unquote(argument: str) -> str:
    """A launch substitution argument may be quoted: 'a \\'b\\' c' -> a 'b' c."""
    argument = argument.strip()
    if len(argument) >= 2 and argument[0] == argument[-1] and argument[0] in '"\'':
        argument = argument[1:-1].replace('\\' + argument[0], argument[0])
    return argument


def _literal_eval(expression: str):
    """Evaluates comparisons of literals — the only $(eval) this project's launch files use."""
    try:
        tree = ast.parse(expression, mode='eval')
    except SyntaxError:
        raise LaunchError(f'$(eval {expression}) is not a valid expression') from None

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.BoolOp):
            values = [ev(v) for v in node.values]
            return all(values) if isinstance(node.op, ast.And) else any(values)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return not ev(node.operand)
        if isinstance(node, ast.Compare) and len(node.ops) == 1:
            left, right = ev(node.left), ev(node.comparators[0])
            ops = {ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b}
            if type(node.ops[0]) in ops:
                return ops[type(node.ops[0])](left, right)
        raise LaunchError(f'$(eval {expression}) uses more than literal comparisons')
    return ev(tree)


def load(path: str | Path, arguments: dict[str, str]) -> list[NodeSpec]:
    """Reads a launch file (and its includes) into the nodes to start, resolving args and conditions."""
    context = Context(arguments)
    nodes: list[NodeSpec] = []
    _run_file(Path(path), context, nodes)
    unused = set(arguments) - set(context.vars)
    if unused:
        raise LaunchError(f'unknown launch argument(s): {", ".join(sorted(unused))}')
    return nodes


def _run_file(path: Path, context: Context, nodes: list[NodeSpec]) -> None:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise LaunchError(f'cannot read launch file {path}: {exc}') from None
    if root.tag != 'launch':
        raise LaunchError(f'{path}: root element is <{root.tag}>, expected <launch>')
    context.file_stack.append(path)
    _run_children(root, context, nodes)
    context.file_stack.pop()


def _run_children(parent: ET.Element, context: Context, nodes: list[NodeSpec]) -> None:
    for element in parent:
        if not isinstance(element.tag, str):   # comments
            continue
        if not context.condition(element):
            continue
        handler = _HANDLERS.get(element.tag)
        if handler is None:
            raise LaunchError(f'<{element.tag}> is not supported by `adawm launch` (supported: {", ".join(_HANDLERS)})')
        try:
            handler(element, context, nodes)
        except KeyError as exc:
            raise LaunchError(f'<{element.tag}> lacks its attribute {exc}') from None


def _arg(element, context, nodes):
    name = element.attrib['name']
    if name in context.cli_args:
        context.vars[name] = context.cli_args[name]
    elif name in context.vars:
        pass   # given by an enclosing <include>
    elif 'default' in element.attrib:
        context.vars[name] = context.substitute(element.attrib['default'])
    else:
        raise LaunchError(f'launch argument {name!r} is required (pass {name}:=VALUE)')
    choices = [child.attrib['value'] for child in element if child.tag == 'choice']
    if choices and context.vars[name] not in choices:
        raise LaunchError(f'launch argument {name}:={context.vars[name]!r} is not one of: {", ".join(choices)}')


def _let(element, context, nodes):
    context.vars[element.attrib['name']] = context.substitute(element.attrib['value'])


def _group(element, context, nodes):
    saved = dict(context.vars)
    _run_children(element, context, nodes)
    if element.attrib.get('scoped', 'true').lower() != 'false':
        context.vars = saved


def _include(element, context, nodes):
    path = Path(context.substitute(element.attrib['file']))
    passed = {a.attrib['name']: context.substitute(a.attrib['value']) for a in element if a.tag == 'arg'}
    saved_vars, saved_cli = dict(context.vars), context.cli_args
    context.vars.update(passed)
    context.cli_args = passed
    _run_file(path, context, nodes)
    context.vars, context.cli_args = saved_vars, saved_cli


def _node(element, context, nodes):
    sub = context.substitute
    spec = NodeSpec(package=sub(element.attrib['pkg']), executable=sub(element.attrib['exec']),
                    name=sub(element.attrib['name']) if 'name' in element.attrib else None,
                    namespace=sub(element.attrib['namespace']) if 'namespace' in element.attrib else None,
                    args=sub(element.attrib.get('args', '')).split())
    for child in element:
        if not isinstance(child.tag, str) or not context.condition(child):
            continue
        if child.tag == 'param' and 'from' in child.attrib:
            spec.param_files.append(sub(child.attrib['from']))
        elif child.tag == 'param':
            value = sub(child.attrib['value'])
            try:   # a value ros2 launch could not parse should fail here, not in the node
                yaml.safe_load(value)
            except yaml.YAMLError as exc:
                raise LaunchError(f'<param name="{child.attrib.get("name")}"> value {value!r} is not YAML: '
                                  f'{str(exc).splitlines()[0]}') from None
            spec.params.append((child.attrib['name'], value))
        elif child.tag == 'remap':
            spec.remaps.append((sub(child.attrib['from']), sub(child.attrib['to'])))
        else:
            raise LaunchError(f'<{child.tag}> inside <node> is not supported by `adawm launch`')
    nodes.append(spec)


_HANDLERS = {'arg': _arg, 'let': _let, 'group': _group, 'include': _include, 'node': _node}


def run(nodes: list[NodeSpec], duration_s: float | None = None, stop_grace_s: float = 10.0) -> int:
    """Starts every node, waits until one fails, time is up, or a signal arrives; stops them all."""
    params_dir = tempfile.mkdtemp(prefix='adawm_launch_')
    commands = [spec.command(params_dir) for spec in nodes]   # resolve every executable before starting any
    stop = {'requested': False}

    def request_stop(signum, frame):
        stop['requested'] = True

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    procs: list[subprocess.Popen] = []
    exit_code = 0
    try:
        for spec, cmd in zip(nodes, commands):
            print(f'[adawm launch] starting {spec.name or spec.executable}: {" ".join(cmd)}', flush=True)
            procs.append(subprocess.Popen(cmd, start_new_session=True))
        deadline = None if duration_s is None else time.monotonic() + duration_s
        while not stop['requested'] and (deadline is None or time.monotonic() < deadline):
            failed = [(p, s) for p, s in zip(procs, nodes) if p.poll() not in (None, 0)]
            if failed:
                proc, spec = failed[0]
                print(f'[adawm launch] {spec.name or spec.executable} exited with code {proc.returncode}; '
                      f'stopping the others', flush=True)
                exit_code = 1
                break
            if all(p.poll() is not None for p in procs):
                break
            time.sleep(0.1)
    finally:
        _stop_all(procs, stop_grace_s)
        shutil.rmtree(params_dir, ignore_errors=True)
        for s, handler in previous.items():
            signal.signal(s, handler)
    return exit_code


def _stop_all(procs: list[subprocess.Popen], grace_s: float) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        alive = [p for p in procs if p.poll() is None]
        if not alive:
            return
        for p in alive:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + (grace_s if sig != signal.SIGKILL else 5.0)
        while time.monotonic() < deadline and any(p.poll() is None for p in alive):
            time.sleep(0.05)


def parse_arguments(pairs: list[str]) -> dict[str, str]:
    arguments = {}
    for pair in pairs:
        name, sep, value = pair.partition(':=')
        if not sep or not name:
            raise LaunchError(f'launch arguments are NAME:=VALUE, got {pair!r}')
        arguments[name] = value
    return arguments


def main(path: str, pairs: list[str], duration_s: float | None = None) -> int:
    try:
        nodes = load(path, parse_arguments(pairs))
        return run(nodes, duration_s)
    except LaunchError as exc:
        print(f'adawm launch: {exc}', file=sys.stderr)
        return 2
