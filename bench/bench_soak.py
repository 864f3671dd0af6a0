"""Soak: the embedded stack with adaptation on for N simulated minutes. Reports each node's memory (RSS
sampled every simulated minute: the curve, and the growth after the first minute), missed frames, safe
stops, adapters applied / rolled back / rejected, and episodes.

    ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID=59 \
        .venv/bin/python bench/bench_soak.py [--minutes 20] [--speed 1.0] [--checkpoint DIR] [--csv FILE]

`--speed` runs the simulator faster than real time (the planner must keep up: watch missed frames).
Loopback only; bounded by the simulated minutes (and a wall-clock limit of 3× that at the given speed).
"""
import argparse
import collections
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f'/proc/{pid}/status').read_text().splitlines():
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float('nan')


def node_pids() -> dict[str, int]:
    out = subprocess.run(['ps', '-eo', 'pid,args'], capture_output=True, text=True).stdout
    pids = {}
    for line in out.splitlines():
        for name in ('sim_bridge_node', 'planner_node', 'adaptation_node'):
            if f'__node:={name}' in line:
                pids[name] = int(line.split()[0])
    return pids


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--minutes', type=float, default=20.0)
    parser.add_argument('--speed', type=float, default=1.0)
    parser.add_argument('--checkpoint', default='')
    parser.add_argument('--csv', default='', help='also write the RSS curve (simulated minute, node, MiB) here')
    args = parser.parse_args()
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')

    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from adawm_planner.share import find_package_share
    from adawm_planner.nodes.monitor import StackMonitor
    from adawm_planner.sim import default_pair, shift_pairs

    task = shift_pairs()[default_pair()]['finetune']
    sim_seconds = 60 * args.minutes
    with tempfile.TemporaryDirectory() as tmp:
        launch_file = find_package_share('adawm_planner') / 'launch/adawm.launch.xml'
        stack = subprocess.Popen(
            [sys.executable, '-m', 'adawm_planner.cli', 'launch', str(launch_file), f'task:={task}',
             f'checkpoint:={args.checkpoint}', f'speed:={args.speed}'],
            env=dict(os.environ, ADAWM_STATE_DIR=str(Path(tmp) / 'state')),
            stdout=open(Path(tmp) / 'stack.log', 'w'), stderr=subprocess.STDOUT, start_new_session=True)
        rclpy.init()
        monitor = StackMonitor()
        executor = SingleThreadedExecutor()
        executor.add_node(monitor)
        stops, last_message = 0, 'planning'
        first_rss, started, curve = None, time.monotonic(), []   # curve: (simulated minute, {node: MiB})
        try:
            while stack.poll() is None and time.monotonic() - started < 3 * sim_seconds / args.speed + 120:
                executor.spin_once(timeout_sec=0.1)
                message = monitor.diagnostics.get('message', 'planning')
                if message != last_message and message.startswith('safe stop'):
                    stops += 1
                last_message = message
                sim_now = monitor.frame_stamps[-1] if monitor.frame_stamps else 0.0
                if sim_now >= 60 * (len(curve) + 1):
                    curve.append((len(curve) + 1, {n: rss_mib(p) for n, p in node_pids().items()}))
                    first_rss = first_rss or curve[0][1]
                if sim_now >= sim_seconds:
                    break
            last_rss = {n: rss_mib(p) for n, p in node_pids().items()}
            summary = monitor.summary()
            wall = time.monotonic() - started
        finally:
            os.killpg(stack.pid, signal.SIGTERM)
            stack.wait(timeout=60)
            rclpy.try_shutdown()
    names = ('sim_bridge_node', 'planner_node', 'adaptation_node')
    print('RSS (MiB) per simulated minute: minute | ' + ' | '.join(names))
    for minute, rss in curve:
        print(f'  {minute:3d} | ' + ' | '.join(f'{rss.get(n, float("nan")):.0f}' for n in names), flush=True)
    if args.csv:
        Path(args.csv).write_text('minute,node,rss_mib\n' + ''.join(
            f'{minute},{n},{rss.get(n, float("nan")):.1f}\n' for minute, rss in curve for n in names))
    statuses = collections.Counter(summary['adapters'])
    planner = summary['planner']
    print(f'soak: {monitor.frame_stamps[-1] if monitor.frame_stamps else 0:.0f} s simulated in {wall:.0f} s wall '
          f'(speed {args.speed}), task {task}')
    for name in ('sim_bridge_node', 'planner_node', 'adaptation_node'):
        a, b = (first_rss or {}).get(name, float('nan')), last_rss.get(name, float('nan'))
        print(f'  {name}: RSS {a:.0f} MiB after 1 simulated minute -> {b:.0f} MiB at the end ({b - a:+.0f} MiB)')
    print(f'  frames answered {100 * summary["command_coverage"]:.1f}%, missed frames {planner.get("missed_frames")} '
          f'of {planner.get("frames")}, tick p50 {planner.get("tick_latency_p50_ms")} ms / '
          f'p99 {planner.get("tick_latency_p99_ms")} ms')
    print(f'  safe stops {stops}; episodes {summary["episodes"]} {summary["outcomes"]}')
    print(f'  adapters applied {statuses.get("applied", 0)}, rolled back {statuses.get("rolled_back", 0)}, '
          f'rejected {statuses.get("rejected", 0)}; mismatch reports {summary["mismatch_reports"]} {summary["decisions"]}')


if __name__ == '__main__':
    main()
