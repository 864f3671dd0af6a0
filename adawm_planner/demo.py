"""`adawm demo` (what `make demo` runs): the embedded stack on a shift pair's new task, with the shipped
checkpoint and adaptation on, for a bounded time; then a summary on the terminal — with the trend, success
in the first vs the last window of simulated time — and a markdown report with plots. With `compare`, the
adaptation-off baseline follows on the same episode seeds for the same simulated time, and both are
printed with their difference.

Reads top to bottom: run the stack (live.run_stack: launch file as its own process group, a StackMonitor,
SIGTERM when time is up or on Ctrl-C), summarise, optionally run the baseline and compare.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from adawm_planner import live

BASELINE_WALL_FACTOR = 3   # the baseline may take this many times the demo's wall time to cover its sim time


def run(duration_s: float, pair: str | None, out_dir: Path, strategy: str, launch_file: Path,
        record: bool = False, checkpoint: str = '', window_s: float = 60.0, compare: bool = False,
        lockstep: bool = False) -> int:
    from adawm_planner.core.lora import default_key_file
    from adawm_planner.experiments.cli_args import refuse
    from adawm_planner.sim import default_pair, shift_pairs

    pairs = shift_pairs()
    pair = pair or default_pair()
    if pair not in pairs:
        return refuse('demo', f'unknown shift pair {pair!r}; known: {", ".join(pairs)}')
    if window_s <= 0:
        return refuse('demo', f'--window must be positive, got {window_s:g}')
    task = pairs[pair]['finetune']
    seed = 0
    print(f'adawm demo: shift pair {pair} ({pairs[pair]["pretrain"]} -> {task}), strategy {strategy}, '
          f'{duration_s:.0f} s{" in lockstep" if lockstep else ""}; '
          f'ROS_DOMAIN_ID={os.environ.get("ROS_DOMAIN_ID", "0")}, DDS on loopback only; '
          f'adapters signed with the key in {default_key_file()}')
    command = live.launch_command(launch_file, task, strategy, seed, checkpoint, lockstep)
    adapted = live.run_stack(command, out_dir, strategy, seed, wall_seconds=duration_s, record=record)
    summary = dict(adapted.summary, pair=pair, task=task, strategy=strategy, duration_s=adapted.wall_s,
                   sim_s=round(adapted.sim_end, 1), stack_exit_code=adapted.stack_exit_code)
    rows = live.windows(adapted.episodes, adapted.reports, adapted.statuses, window_s, adapted.sim_end)
    summary['windows'] = rows
    text = format_summary(summary) + '\n' + format_trend(rows, window_s)
    print(text)
    if compare:
        print(f'adawm demo --compare: the same seeds with adaptation off, for the same {adapted.sim_end:.0f} s '
              f'of simulated time')
        wall = BASELINE_WALL_FACTOR * duration_s + 60
        baseline = live.run_stack(live.launch_command(launch_file, task, live.OFF, seed, checkpoint, lockstep),
                                  out_dir / 'baseline', live.OFF, seed, sim_seconds=adapted.sim_end, wall_seconds=wall)
        base_rows = live.windows(baseline.episodes, baseline.reports, baseline.statuses, window_s, adapted.sim_end)
        summary['baseline'] = dict(baseline.summary, sim_s=round(baseline.sim_end, 1), duration_s=baseline.wall_s,
                                   windows=base_rows)
        comparison = format_comparison(rows, base_rows, strategy)
        if baseline.sim_end < adapted.sim_end - 1.0:
            comparison += (f'\n  NOTE: the baseline reached only {baseline.sim_end:.0f} of {adapted.sim_end:.0f} s of '
                           f'simulated time within {wall:.0f} s')
        if not lockstep:
            comparison += ('\n  NOTE: at real-time pace the planner\'s deadline and the machine\'s load shape every '
                           'decision, adapted or not, so the two runs can differ even before the first adapter; for a '
                           'comparison CPU speed cannot change, use --lockstep (or bench/bench_live.py)')
        print(comparison)
        text += '\n\n' + comparison
    (out_dir / 'summary.json').write_text(json.dumps(summary, indent=2) + '\n')
    write_report(adapted, out_dir, text)
    print(f'report: {out_dir / "report.md"}; stack log: {out_dir / "stack.log"}')
    return 0 if summary['frames'] else 1


def format_trend(rows: list[dict], window_s: float) -> str:
    first, last = live.trend(rows)
    if first is None:
        return '  trend               no episode finished'
    rated = [r for r in rows if r['success_rate'] is not None]
    return (f'  trend               success {live.fmt(first)} in the first {window_s:.0f}-s window with episodes '
            f'({rated[0]["start_s"]:.0f}-{rated[0]["end_s"]:.0f} s), {live.fmt(last)} in the last '
            f'({rated[-1]["start_s"]:.0f}-{rated[-1]["end_s"]:.0f} s): {last - first:+.2f}')


def format_comparison(rows: list[dict], base_rows: list[dict], strategy: str) -> str:
    """Per window, success with adaptation, without, and the difference; then over the whole run."""
    lines = [f'{"window (sim s)":>15s} {strategy:>8s} {"off":>8s} {"difference":>10s}']
    for a, b in zip(rows, base_rows):
        diff = (a['success_rate'] - b['success_rate']
                if a['success_rate'] is not None and b['success_rate'] is not None else None)
        lines.append(f'{a["start_s"]:>7.0f}-{a["end_s"]:<7.0f} {live.fmt(a["success_rate"]):>8s} '
                     f'{live.fmt(b["success_rate"]):>8s} {"—" if diff is None else f"{diff:+.2f}":>10s}')
    total = lambda rs: (sum(r['success_rate'] * r['episodes'] for r in rs if r['episodes']),
                        sum(r['episodes'] for r in rs))
    (won_a, n_a), (won_b, n_b) = total(rows), total(base_rows)
    if n_a and n_b:
        lines.append(f'{"whole run":>15s} {won_a / n_a:>8.2f} {won_b / n_b:>8.2f} {won_a / n_a - won_b / n_b:>+10.2f}'
                     f'   ({n_a} vs {n_b} episodes)')
    return 'success rate per window, adaptation on vs off (same seeds):\n' + '\n'.join(lines)


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


def write_report(run: live.Run, out_dir: Path, text: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True)
    if run.reports:
        t = np.array([r.header.stamp.sec + r.header.stamp.nanosec * 1e-9 for r in run.reports])
        axes[0].plot(t, [r.model_mismatch for r in run.reports], label='ε_P (model mismatch)')
        axes[0].plot(t, [r.policy_mismatch for r in run.reports], label='ε_π (policy mismatch)')
        for s in run.statuses:
            axes[0].axvline(s.header.stamp.sec + s.header.stamp.nanosec * 1e-9, color='green' if s.state == 0 else 'red',
                            alpha=0.4, linewidth=1)
        axes[0].legend(loc='upper right')
    axes[0].set_ylabel('mismatch estimate')
    axes[0].set_title('mismatch over the run (vertical lines: adapters applied green / rejected or rolled back red)')
    colors = {0: 'tab:green', 1: 'tab:red', 2: 'tab:orange', 3: 'tab:gray', 4: 'black'}
    for e in run.episodes:
        end = e.header.stamp.sec + e.header.stamp.nanosec * 1e-9
        axes[1].barh(0, e.duration, left=end - e.duration, color=colors.get(e.outcome, 'black'), edgecolor='white')
    axes[1].set_yticks([])
    axes[1].set_xlabel('simulation time (s)')
    axes[1].set_title('episodes: green success, red collision, orange off-route, grey timeout')
    fig.tight_layout()
    fig.savefig(out_dir / 'demo.png', dpi=100)
    plt.close(fig)
    (out_dir / 'report.md').write_text(f'# AdaWM demo report\n\n```\n{text}\n```\n\n![mismatch and episodes](demo.png)\n')
