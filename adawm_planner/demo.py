"""`adawm demo` (what `make demo` runs): the embedded stack on a shift pair's new task, with the shipped
checkpoint and adaptation on, for a bounded time; then a summary on the terminal and a markdown report
with plots.

Reads top to bottom: start the launch file as its own process group, listen with a StackMonitor, stop
everything with SIGTERM when time is up (or on Ctrl-C), summarise.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def run(duration_s: float, pair: str | None, out_dir: Path, strategy: str, launch_file: Path,
        record: bool = False, checkpoint: str = '') -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from adawm_planner.nodes.monitor import StackMonitor
    from adawm_planner.sim import default_pair, shift_pairs

    from adawm_planner.experiments.cli_args import refuse
    pairs = shift_pairs()
    pair = pair or default_pair()
    if pair not in pairs:
        return refuse('demo', f'unknown shift pair {pair!r}; known: {", ".join(pairs)}')
    task = pairs[pair]['finetune']
    out_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    env = dict(os.environ, ADAWM_STATE_DIR=str(out_dir / 'adaptation_state'))
    command = [sys.executable, '-m', 'adawm_planner.cli', 'launch', str(launch_file), 'sim:=embedded',
               f'task:={task}', 'adapt:=true', f'strategy:={strategy}', f'checkpoint:={checkpoint}']
    from adawm_planner.core.lora import default_key_file
    print(f'adawm demo: shift pair {pair} ({pairs[pair]["pretrain"]} -> {task}), strategy {strategy}, '
          f'{duration_s:.0f} s; ROS_DOMAIN_ID={os.environ.get("ROS_DOMAIN_ID", "0")}, DDS on loopback only; '
          f'adapters signed with the key in {default_key_file()}')
    stack = subprocess.Popen(command, env=env, start_new_session=True,
                             stdout=open(out_dir / 'stack.log', 'w'), stderr=subprocess.STDOUT)
    recorder = None
    if record:
        recorder = subprocess.Popen([sys.executable, '-m', 'adawm_planner.cli', 'record', str(out_dir / 'bag')],
                                    env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.STDOUT)
    rclpy.init()
    monitor = StackMonitor()
    executor = SingleThreadedExecutor()
    executor.add_node(monitor)
    started = time.monotonic()
    last_print = started
    try:
        while time.monotonic() - started < duration_s and stack.poll() is None:
            executor.spin_once(timeout_sec=0.1)
            if time.monotonic() - last_print > 15:
                last_print = time.monotonic()
                s = monitor.summary()
                print(f'  t={time.monotonic() - started:4.0f} s  frames {s["frames"]}  episodes {s["episodes"]} '
                      f'{s["outcomes"]}  mismatch reports {s["mismatch_reports"]} {s["decisions"]}  '
                      f'adapters {s["adapters"]}', flush=True)
    except KeyboardInterrupt:
        print('adawm demo: interrupted; stopping the stack')
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
        summary = monitor.summary()
        monitor.destroy_node()
        rclpy.try_shutdown()
    summary.update(pair=pair, task=task, strategy=strategy, duration_s=round(time.monotonic() - started, 1),
                   stack_exit_code=stack.returncode)
    (out_dir / 'summary.json').write_text(json.dumps(summary, indent=2) + '\n')
    text = format_summary(summary)
    print(text)
    write_report(summary, monitor, out_dir, text)
    print(f'report: {out_dir / "report.md"}; stack log: {out_dir / "stack.log"}')
    return 0 if summary['frames'] else 1


def format_summary(s: dict) -> str:
    p = s['planner']
    outcomes = s['outcomes']
    finished = max(s['episodes'], 1)
    lines = [
        f'AdaWM demo — {s["pair"]}: new task {s["task"]}, strategy {s["strategy"]}, {s["duration_s"]:.0f} s',
        f'  episodes            {s["episodes"]}  (success {outcomes.get("success", 0)}, collision '
        f'{outcomes.get("collision", 0)}, off-route {outcomes.get("off_route", 0)}, timeout {outcomes.get("timeout", 0)})',
        f'  success rate        {outcomes.get("success", 0) / finished:.2f}',
        f'  frames / commands   {s["frames"]} / {s["commands"]}  (frames answered: {100 * s["command_coverage"]:.1f}%)',
        f'  mismatch decisions  {s["mismatch_reports"]} reports: update model {s["decisions"].get("model", 0)}, '
        f'update policy {s["decisions"].get("policy", 0)}, none {s["decisions"].get("none", 0)}',
        f'  adapters            applied {s["adapters"].get("applied", 0)}, rejected {s["adapters"].get("rejected", 0)}',
        f'  planner tick        p50 {p.get("tick_latency_p50_ms", "?")} ms, p99 {p.get("tick_latency_p99_ms", "?")} ms, '
        f'missed frames {p.get("missed_frames", "?")}',
    ]
    return '\n'.join(lines)


def write_report(summary: dict, monitor, out_dir: Path, text: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True)
    if monitor.reports:
        t = np.array([r.header.stamp.sec + r.header.stamp.nanosec * 1e-9 for r in monitor.reports])
        axes[0].plot(t, [r.model_mismatch for r in monitor.reports], label='ε_P (model mismatch)')
        axes[0].plot(t, [r.policy_mismatch for r in monitor.reports], label='ε_π (policy mismatch)')
        for s in monitor.statuses:
            axes[0].axvline(s.header.stamp.sec + s.header.stamp.nanosec * 1e-9, color='green' if s.state == 0 else 'red',
                            alpha=0.4, linewidth=1)
        axes[0].legend(loc='upper right')
    axes[0].set_ylabel('mismatch estimate')
    axes[0].set_title('mismatch over the run (vertical lines: adapters applied green / rejected or rolled back red)')
    colors = {0: 'tab:green', 1: 'tab:red', 2: 'tab:orange', 3: 'tab:gray', 4: 'black'}
    for e in monitor.episodes:
        end = e.header.stamp.sec + e.header.stamp.nanosec * 1e-9
        axes[1].barh(0, e.duration, left=end - e.duration, color=colors.get(e.outcome, 'black'), edgecolor='white')
    axes[1].set_yticks([])
    axes[1].set_xlabel('simulation time (s)')
    axes[1].set_title('episodes: green success, red collision, orange off-route, grey timeout')
    fig.tight_layout()
    fig.savefig(out_dir / 'demo.png', dpi=100)
    plt.close(fig)
    (out_dir / 'report.md').write_text(f'# AdaWM demo report\n\n```\n{text}\n```\n\n![mismatch and episodes](demo.png)\n')
