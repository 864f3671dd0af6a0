"""Live runs of the embedded stack, shared by `adawm demo` and bench/bench_live.py: start the launch file as
its own process group, listen with a StackMonitor until enough simulated time (or wall time) has passed,
stop everything with SIGTERM, and cut what the stack did into windows of simulated time.

The arms of a live comparison: `off` (no adaptation node), and adaptation with a strategy (`adawm`,
`policy`, ...). Everything a window holds comes from the messages the monitor heard, stamped with
simulated time: episodes by their end, mismatch reports (one per finetuning step), adapter statuses.
"""
from __future__ import annotations

import dataclasses
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

OFF = 'off'   # the arm without the adaptation node
ARM_WIDTH = 9  # characters of an arm's name in the tables ('alternate')


@dataclasses.dataclass
class Run:
    """What one run of the stack left: the monitor's messages and how the run ended."""
    arm: str
    seed: int
    sim_end: float          # s: the newest frame the monitor saw
    wall_s: float
    stack_exit_code: int | None
    summary: dict           # StackMonitor.summary()
    episodes: list          # adawm_msgs/EpisodeOutcome
    reports: list           # adawm_msgs/MismatchReport
    statuses: list          # adawm_msgs/AdapterStatus


def launch_command(launch_file: Path, task: str, arm: str, seed: int, checkpoint: str = '',
                   lockstep: bool = False) -> list[str]:
    adapt = ['adapt:=false'] if arm == OFF else ['adapt:=true', f'strategy:={arm}']
    return [sys.executable, '-m', 'adawm_planner.cli', 'launch', str(launch_file), 'sim:=embedded', f'task:={task}',
            *adapt, f'checkpoint:={checkpoint}', f'seed:={seed}', f'lockstep:={str(lockstep).lower()}']


def run_stack(command: list[str], out_dir: Path, arm: str, seed: int, sim_seconds: float = math.inf,
              wall_seconds: float = math.inf, record: bool = False, say=lambda text: print(text, flush=True)) -> Run:
    """Runs the stack until the monitor has seen `sim_seconds` of simulated time or `wall_seconds` have
    passed (or the stack ends, or Ctrl-C); the caller judges whether that was enough. Logs, adapter state
    and any recording go under `out_dir`."""
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor

    from adawm_planner.nodes.monitor import StackMonitor

    out_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    env = dict(os.environ, ADAWM_STATE_DIR=str(out_dir / 'adaptation_state'))
    stack = subprocess.Popen(command, env=env, start_new_session=True,
                             stdout=open(out_dir / 'stack.log', 'w'), stderr=subprocess.STDOUT)
    recorder = None
    if record:
        recorder = subprocess.Popen([sys.executable, '-m', 'adawm_planner.cli', 'record', str(out_dir / 'bag')],
                                    env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.STDOUT)
    context = Context()
    rclpy.init(context=context)
    monitor = StackMonitor(context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(monitor)
    started = last_print = time.monotonic()
    sim_now = lambda: max(monitor.frame_stamps, default=0.0)
    try:
        while time.monotonic() - started < wall_seconds and sim_now() < sim_seconds and stack.poll() is None:
            executor.spin_once(timeout_sec=0.1)
            if time.monotonic() - last_print > 15:
                last_print = time.monotonic()
                s = monitor.summary()
                say(f'  [{arm}, seed {seed}] wall {time.monotonic() - started:5.0f} s  sim {sim_now():6.1f} s  '
                    f'episodes {s["episodes"]} {s["outcomes"]}  finetuning steps {s["mismatch_reports"]}  '
                    f'adapters {s["adapters"]}')
    except KeyboardInterrupt:
        say('interrupted; stopping the stack')
    finally:
        for proc in (recorder, stack):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in (recorder, stack):
            if proc is not None:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        for _ in range(10):   # what is already on its way (an episode's end, a last report)
            executor.spin_once(timeout_sec=0.01)
        run = Run(arm=arm, seed=seed, sim_end=sim_now(), wall_s=round(time.monotonic() - started, 1),
                  stack_exit_code=stack.returncode, summary=monitor.summary(), episodes=list(monitor.episodes),
                  reports=list(monitor.reports), statuses=list(monitor.statuses))
        monitor.destroy_node()
        rclpy.try_shutdown(context=context)
    return run


# ---- windows of simulated time ----------------------------------------------------------------------------
def stamp(msg) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def windows(episodes, reports, statuses, window_s: float, end_s: float) -> list[dict]:
    """Per window [k * window_s, (k+1) * window_s) of simulated time up to `end_s` (the last one may be
    shorter): episodes that ended in it, their success and collision rates and mean return (None without
    episodes), adapters applied and rolled back, and finetuning steps (mismatch reports) per simulated minute.
    An adapter status is counted once per (target, version, state): planner and adaptation node both
    announce an applied one."""
    from adawm_planner.nodes.monitor import OUTCOME_NAMES, STATE_NAMES
    count = max(1, math.ceil(end_s / window_s - 1e-9))
    index = lambda msg: min(max(int(stamp(msg) // window_s), 0), count - 1)   # past end_s: the last window
    unique = {(s.target, s.version, s.state): s for s in statuses}.values()
    rows = []
    for k in range(count):
        start, end = k * window_s, min((k + 1) * window_s, max(end_s, k * window_s))
        ended = [e for e in episodes if index(e) == k]
        outcomes = [OUTCOME_NAMES[e.outcome] for e in ended]
        states = [STATE_NAMES[s.state] for s in unique if index(s) == k]
        steps = sum(index(r) == k for r in reports)
        rows.append({
            'window': k, 'start_s': round(start, 1), 'end_s': round(end, 1), 'episodes': len(ended),
            'success_rate': outcomes.count('success') / len(ended) if ended else None,
            'collision_rate': outcomes.count('collision') / len(ended) if ended else None,
            'mean_return': sum(e.episode_return for e in ended) / len(ended) if ended else None,
            'adapters_applied': states.count('applied'), 'adapters_rolled_back': states.count('rolled_back'),
            'finetune_steps_per_min': steps * 60 / (end - start) if end > start else 0.0})
    return rows


def trend(rows: list[dict]) -> tuple[float | None, float | None]:
    """Success rate in the first and in the last window that has episodes."""
    rated = [r['success_rate'] for r in rows if r['success_rate'] is not None]
    return (rated[0], rated[-1]) if rated else (None, None)


def fmt(value, digits=2) -> str:
    return '—' if value is None else f'{value:.{digits}f}'


def window_table(rows: list[dict]) -> str:
    """A plain-text table, one line per window (and per arm, when rows carry 'arm')."""
    head = f'{"arm":{ARM_WIDTH}s} {"seed":>4s} ' if rows and 'arm' in rows[0] else ''
    lines = [head + f'{"window (sim s)":>15s} {"episodes":>8s} {"success":>7s} {"collision":>9s} {"return":>7s} '
                    f'{"applied":>7s} {"rolled back":>11s} {"ft steps/min":>12s}']
    for r in rows:
        prefix = f'{r["arm"]:{ARM_WIDTH}s} {r["seed"]:>4d} ' if head else ''
        lines.append(prefix + f'{r["start_s"]:>7.0f}-{r["end_s"]:<7.0f} {r["episodes"]:>8d} '
                     f'{fmt(r["success_rate"]):>7s} {fmt(r["collision_rate"]):>9s} {fmt(r["mean_return"], 1):>7s} {r["adapters_applied"]:>7d} '
                     f'{r["adapters_rolled_back"]:>11d} {r["finetune_steps_per_min"]:>12.1f}')
    return '\n'.join(lines)
