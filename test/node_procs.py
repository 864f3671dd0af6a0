"""Nodes as processes of their own, for the tests that drive the stack over real DDS."""
import os
import signal
import subprocess
import sys
import time


def start_node(executable, params, log, remaps=()):
    """`python -m adawm_planner.nodes.<executable>` with `-p name:=value` per parameter and `-r from:=to` per
    remapping, in a session of its own so a signal reaches the whole process group."""
    args = [a for k, v in params.items() for a in ('-p', f'{k}:={v}')] + [a for r in remaps for a in ('-r', r)]
    return subprocess.Popen([sys.executable, '-m', f'adawm_planner.nodes.{executable}', '--ros-args', *args],
                            env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop_nodes(procs):
    """SIGINT to every node still running, then SIGKILL to any that has not ended within 30 s."""
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def spin_until(executor, predicate, seconds, what, log_path):
    """Spin until `predicate()` holds; past `seconds`, fail saying `what` (a string, or a function that says
    it at that moment) was awaited, with the nodes' log."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        executor.spin_once(timeout_sec=0.05)
        if predicate():
            return
    raise AssertionError(f'{what() if callable(what) else what} within {seconds} s; log:\n' + log_path.read_text()[-3000:])
