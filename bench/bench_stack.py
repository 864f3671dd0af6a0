"""The stack over DDS at the bridge's 20 Hz with adaptation running beside the planner: planner tick
latency (frame in -> command out, p50/p99), frames missed, frames answered, and adapter swap time.

    ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID=57 \
        .venv/bin/python bench/bench_stack.py [--checkpoint DIR] [--preset small] [--seconds 90]

Without --checkpoint it builds an untrained checkpoint of the preset in a temp dir: latency depends on the
network's size, not on what it has learned. Loopback only; bounded by --seconds.
"""
import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--checkpoint', default=None)
    parser.add_argument('--preset', default='small')
    parser.add_argument('--seconds', type=float, default=90.0)
    parser.add_argument('--adapt', default='true')
    parser.add_argument('--mode', default='plan', choices=('plan', 'actor'),
                        help="the planner's mode (plan: the K x H lookahead tick this bench is about)")
    parser.add_argument('--budget-ms', type=float, default=None,
                        help="the planner's budget_ms (default: config/planner.yaml's, else the code's)")
    args = parser.parse_args()
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')

    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from adawm_planner.experiments.pretrain import save_untrained
    from adawm_planner.share import find_package_share
    from adawm_planner.nodes.monitor import StackMonitor
    from adawm_planner.sim import default_pair, shift_pairs

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        checkpoint = Path(args.checkpoint) if args.checkpoint else save_untrained(tmp / args.preset, args.preset, scripted_steps=500)
        task = shift_pairs()[default_pair()]['finetune']
        launch_file = find_package_share('adawm_planner') / 'launch/adawm.launch.xml'
        log_path = tmp / 'stack.log'
        launch_args = [f'task:={task}', f'checkpoint:={checkpoint}', f'adapt:={args.adapt}', f'mode:={args.mode}']
        if args.budget_ms is not None:   # the shipped planner parameters with this budget
            params = yaml.safe_load((find_package_share('adawm_planner') / 'config/planner.yaml').read_text())
            params['planner_node']['ros__parameters']['budget_ms'] = args.budget_ms
            (tmp / 'planner.yaml').write_text(yaml.safe_dump(params))
            launch_args.append(f'planner_params:={tmp / "planner.yaml"}')
        stack = subprocess.Popen(
            [sys.executable, '-m', 'adawm_planner.cli', 'launch', str(launch_file), *launch_args],
            env=dict(os.environ, ADAWM_STATE_DIR=str(tmp / 'state')), stdout=open(log_path, 'w'),
            stderr=subprocess.STDOUT, start_new_session=True)
        rclpy.init()
        monitor = StackMonitor()
        executor = SingleThreadedExecutor()
        executor.add_node(monitor)
        started = time.monotonic()
        try:
            while time.monotonic() - started < args.seconds and stack.poll() is None:
                executor.spin_once(timeout_sec=0.1)
            summary = monitor.summary()
        finally:
            os.killpg(stack.pid, signal.SIGTERM)
            stack.wait(timeout=60)
            rclpy.try_shutdown()
        log = log_path.read_text()
    swaps = [float(x) for x in re.findall(r'applied \(([\d.]+) ms swap\)', log)]
    planner = summary['planner']
    print(f'stack at 20 Hz for {args.seconds:.0f} s (wall), checkpoint preset {args.preset}, adapt={args.adapt}, '
          f'mode {args.mode}, task {task}')
    print(f'  frames seen {summary["frames"]}, answered {100 * summary["command_coverage"]:.1f}% from the planner\'s '
          f'first answer (sim {summary["first_answer"]} s; it was up at sim {summary["planner_up_at"]} s)')
    print(f'  planner tick latency p50 {planner.get("tick_latency_p50_ms")} ms, p99 {planner.get("tick_latency_p99_ms")} ms '
          f'(frame in -> command out, last {min(int(planner.get("frames", 0)), 2000)} frames)')
    print(f'  missed frames {planner.get("missed_frames")} of {planner.get("frames")}; decisions {planner.get("decisions")}')
    if args.mode == 'plan':
        print(f'  budget {planner.get("budget_ms")} ms: horizon afforded p50 {planner.get("afforded_horizon_p50")}, '
              f'min {planner.get("afforded_horizon_min")} (recent decisions); actor fallbacks {planner.get("plan_fallbacks")}')
    print(f'  mismatch reports {summary["mismatch_reports"]} {summary["decisions"]}; adapters {summary["adapters"]}')
    if swaps:
        print(f'  adapter swap (between ticks): median {np.median(swaps):.2f} ms, max {max(swaps):.2f} ms over {len(swaps)}')


if __name__ == '__main__':
    main()
