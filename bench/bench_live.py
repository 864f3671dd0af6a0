"""Live comparison: the embedded stack in lockstep (launch arg lockstep:=true: the bridge steps only when the
planner has answered and the adaptation node has caught up, the planner plans its full horizon; so CPU speed
cannot change the outcome) on a shift pair's new task, the SAME bridge seeds run with adaptation off, with
AdaWM (strategy adawm) and with policy-only finetuning (strategy policy), N simulated minutes each; on request
(--arms) also with model-only finetuning or the two sides alternating (strategies model, alternate).

Per arm, seed and window of simulated time (default 5 min): episodes, success rate, collision rate, mean
return, adapters applied / rolled back, finetuning steps per simulated minute. Writes into --out:
live.csv (one row per arm x seed x window, appended as each run ends), runs.json (each run's totals),
live.png (success per window, one line per arm: the mean over seeds), live.md (the tables and the command);
prints the table. Resumable: run again with the same --out, pair and --minutes and the (arm, seed) runs that
covered their simulated minutes are kept, not rerun (a 30-minute comparison is hours of wall time). Episode k of a run has seed `seed + k` in every arm, so the arms are also compared episode
by episode: of the episode seeds every arm finished, where one succeeded and the other did not; and per window, whether an
arm sits below or above off beyond noise (the seeds' episodes pooled, Fisher's exact test).

    ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID=57 chrt --idle 0 \\
        .venv/bin/python bench/bench_live.py --pair density --seeds 0 1 2 --minutes 30 --out runs/live/density

Loopback only. Each run is bounded by --wall-limit (s of wall time per run): a run that has not covered its
simulated minutes by then fails the benchmark loudly (exit code 1), after what was measured is written.
"""
import argparse
import csv
import json
import os
import shlex
import sys
import time
from pathlib import Path

from adawm_planner import live
from adawm_planner.core.rollback import fewer_arrivals_p
from adawm_planner.nodes.monitor import OUTCOME_NAMES

ARMS = (live.OFF, 'adawm', 'policy')
EXTRA_ARMS = ('model', 'alternate')   # the other fixed sides, on request (the oracle of a pair shifted on both)
FIELDS = ['pair', 'task', 'arm', 'seed', 'window', 'start_s', 'end_s', 'episodes', 'success_rate', 'collision_rate',
          'mean_return', 'adapters_applied', 'adapters_rolled_back', 'finetune_steps_per_min']


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--pair', default=None, help='shift pair from config/tasks.yaml (default: default_pair)')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0], help='bridge seeds (first episode\'s seed)')
    parser.add_argument('--arms', nargs='+', default=list(ARMS), choices=ARMS + EXTRA_ARMS)
    parser.add_argument('--minutes', type=float, default=30.0, help='simulated minutes per run (default 30)')
    parser.add_argument('--window', type=float, default=5.0, help='simulated minutes per window (default 5)')
    parser.add_argument('--checkpoint', default='', help='pretrained checkpoint (default: the shipped one)')
    parser.add_argument('--wall-limit', type=float, default=None, metavar='S',
                        help='wall seconds a run may take (default: 20x its simulated time + 120 s)')
    parser.add_argument('--out', required=True, help='output folder (e.g. under runs/, which git ignores)')
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.window <= 0:
        parser.error('--minutes and --window must be positive')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    from adawm_planner.share import package_share
    from adawm_planner.sim import default_pair, shift_pairs

    pairs = shift_pairs()
    pair = args.pair or default_pair()
    if pair not in pairs:
        print(f'bench_live: unknown shift pair {pair!r}; known: {", ".join(pairs)}', file=sys.stderr)
        return 2
    task = pairs[pair]['finetune']
    launch_file = package_share() / 'launch/adawm.launch.xml'
    sim_seconds, window_s = 60 * args.minutes, 60 * args.window
    wall_limit = args.wall_limit or 20 * sim_seconds + 120
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    given = argv if argv is not None else sys.argv[1:]
    command_line = 'bench/bench_live.py ' + ' '.join(shlex.quote(a) for a in given)
    print(f'bench_live: pair {pair} ({pairs[pair]["pretrain"]} -> {task}), arms {", ".join(args.arms)}, seeds '
          f'{args.seeds}, {args.minutes:g} simulated min each in lockstep, windows of {args.window:g} min; '
          f'ROS_DOMAIN_ID={os.environ.get("ROS_DOMAIN_ID", "0")}, loopback only', flush=True)

    rows, runs = finished_runs(out, pair, sim_seconds)
    failures = []
    done = {(r['arm'], r['seed']) for r in runs}
    if done:
        print(f'bench_live: resuming in {out}: kept {", ".join(f"{a} seed {s}" for a, s in sorted(done))}', flush=True)
    with open(out / 'live.csv', 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows({k: r[k] for k in FIELDS} for r in rows)
        f.flush()
        for seed in args.seeds:          # seeds outer: a killed benchmark leaves whole comparisons
            for arm in args.arms:
                if (arm, seed) in done:
                    continue
                command = live.launch_command(launch_file, task, arm, seed, args.checkpoint, lockstep=True)
                run = live.run_stack(command, out / f'{arm}-seed{seed}', arm, seed, sim_seconds=sim_seconds,
                                     wall_seconds=wall_limit)
                arm_rows = [dict(r, pair=pair, task=task, arm=arm, seed=seed)
                            for r in live.windows(run.episodes, run.reports, run.statuses, window_s, sim_seconds)]
                writer.writerows({k: r[k] for k in FIELDS} for r in arm_rows)
                f.flush()
                rows += arm_rows
                totals = {'pair': pair, 'arm': arm, 'seed': seed, 'minutes': args.minutes,
                          'sim_s': round(run.sim_end, 1), 'wall_s': run.wall_s,
                          'stack_exit_code': run.stack_exit_code, **{k: run.summary[k] for k in (
                              'frames', 'commands', 'command_coverage', 'episodes', 'outcomes', 'mismatch_reports',
                              'decisions', 'adapters', 'planner')},
                          'episode_list': [{'seed': e.seed, 'outcome': OUTCOME_NAMES[e.outcome],
                                            'return': round(e.episode_return, 2), 'end_s': round(live.stamp(e), 2)}
                                           for e in run.episodes]}
                runs.append(totals)
                (out / 'runs.json').write_text(json.dumps(runs, indent=2) + '\n')
                if run.sim_end < sim_seconds - 1.0:
                    failures.append(f'{arm}, seed {seed}: {run.sim_end:.0f} of {sim_seconds:.0f} simulated s in '
                                    f'{run.wall_s:.0f} s wall (limit {wall_limit:.0f} s, stack exit code '
                                    f'{run.stack_exit_code}); see {out / f"{arm}-seed{seed}" / "stack.log"}')
                    print('bench_live: FAILED: ' + failures[-1], file=sys.stderr, flush=True)
                print(f'  [{arm}, seed {seed}] done: {run.sim_end:.0f} simulated s in {run.wall_s:.0f} s wall',
                      flush=True)

    shown = [arm for arm in ARMS + EXTRA_ARMS if any(r['arm'] == arm for r in rows)]   # the kept runs' arms too
    text = summary_text(rows, shown) + '\n\n' + paired_text(runs) + '\n\n' + beyond_noise_text(rows, shown)
    print(text)
    plot(rows, shown, out / 'live.png', f'{pair}: {task}, seeds {sorted({r["seed"] for r in rows})}')
    (out / 'live.md').write_text(
        f'# Live comparison: {pair} ({pairs[pair]["pretrain"]} -> {task})\n\n'
        f'`{command_line}` — {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}, load average '
        f'{os.getloadavg()[0]:.1f} at the end\n\n```\n{text}\n```\n\n![success per window](live.png)\n'
        + ''.join(f'\n**FAILED**: {f}\n' for f in failures))
    print(f'bench_live: {out / "live.csv"}, {out / "live.png"}, {out / "live.md"}')
    return 1 if failures else 0


def finished_runs(out: Path, pair: str, sim_seconds: float) -> tuple[list[dict], list[dict]]:
    """The window rows and run totals of an earlier invocation into `out` whose runs covered the same pair
    and simulated time; runs that fell short are dropped (they run again), as is everything of another
    pair or length."""
    try:
        runs = json.loads((out / 'runs.json').read_text())
        with open(out / 'live.csv', newline='') as f:
            rows = list(csv.DictReader(f))
    except (OSError, ValueError):
        return [], []
    minutes = sim_seconds / 60
    runs = [r for r in runs if r.get('pair') == pair and r.get('minutes') == minutes
            and r['sim_s'] >= sim_seconds - 1.0]
    kept = {(r['arm'], r['seed']) for r in runs}
    def value(key, text):
        if key in ('pair', 'task', 'arm'):
            return text
        if text == '':              # a window without episodes has no rates
            return None
        return int(text) if key in ('seed', 'window', 'episodes', 'adapters_applied', 'adapters_rolled_back') \
            else float(text)
    rows = [{k: value(k, r[k]) for k in FIELDS} for r in rows]
    return [r for r in rows if r['pair'] == pair and (r['arm'], r['seed']) in kept], runs


def mean_by_window(rows, arm, key):
    """Per window index: the mean of `key` over the seeds that have a value there."""
    out = {}
    for r in rows:
        if r['arm'] == arm and r[key] is not None:
            out.setdefault(r['window'], []).append(r[key])
    return {w: sum(v) / len(v) for w, v in sorted(out.items())}


def summary_text(rows, arms) -> str:
    """The per-window table, then per arm the success of the first and last windows (mean over seeds) and
    the difference to the adaptation-off arm in the last window."""
    lines = [live.window_table(rows), '']
    off_last = None
    if live.OFF in arms:
        off = mean_by_window(rows, live.OFF, 'success_rate')
        off_last = off[max(off)] if off else None
    for arm in arms:
        success = mean_by_window(rows, arm, 'success_rate')
        if not success:
            lines.append(f'{arm:{live.ARM_WIDTH}s} no episode finished')
            continue
        first, last = success[min(success)], success[max(success)]
        versus = (f', {last - off_last:+.2f} vs off in the last window'
                  if off_last is not None and arm != live.OFF else '')
        lines.append(f'{arm:{live.ARM_WIDTH}s} success (mean over seeds) first window {first:.2f}, last window {last:.2f} '
                     f'({last - first:+.2f}){versus}')
    return '\n'.join(lines)


def paired_text(runs) -> str:
    """Per adapting arm against `off`: over the episode seeds both finished (in runs of the same bench seed),
    how many both won, only the arm won, only `off` won, neither won."""
    won = {(r['arm'], r['seed']): {e['seed']: e['outcome'] == 'success' for e in r['episode_list']} for r in runs}
    lines = ['episode by episode (same episode seeds) against off: both succeed / only the arm / only off / neither']
    for arm in dict.fromkeys(r['arm'] for r in runs if r['arm'] != live.OFF):
        counts = [0, 0, 0, 0]
        for (a, seed), mine in won.items():
            base = won.get((live.OFF, seed))
            if a != arm or base is None:
                continue
            for episode_seed in mine.keys() & base.keys():
                counts[{(True, True): 0, (True, False): 1, (False, True): 2, (False, False): 3}[
                    (mine[episode_seed], base[episode_seed])]] += 1
        lines.append(f'{arm:{live.ARM_WIDTH}s} {counts[0]} / {counts[1]} / {counts[2]} / {counts[3]}  ({sum(counts)} episodes)')
    return '\n'.join(lines)


def beyond_noise_text(rows, arms) -> str:
    """Per adapting arm and window: its successes over all seeds against off's in the same window, with
    Fisher's exact one-sided p that the arm's rate is no lower (below) / no higher (above) than off's; a
    window is marked where p < 0.05. Pooling the seeds' episodes: one seed's window holds 10-35 episodes,
    too few to tell a dip from the traffic."""
    counts = {}
    for r in rows:
        if r['success_rate'] is not None:
            won, total = counts.get((r['arm'], r['window']), (0, 0))
            counts[(r['arm'], r['window'])] = (won + round(r['success_rate'] * r['episodes']), total + r['episodes'])
    lines = ['beyond noise? per window, successes over the seeds against off; Fisher one-sided p that the arm is '
             'no lower / no higher than off',
             f'{"arm":{live.ARM_WIDTH}s} {"window":>6s} {"arm won":>8s} {"off won":>8s} {"p below":>8s} {"p above":>8s}']
    for arm in (a for a in arms if a != live.OFF):
        for window in sorted(w for a, w in counts if a == arm and (live.OFF, w) in counts):
            (won, total), (base_won, base_total) = counts[(arm, window)], counts[(live.OFF, window)]
            below = fewer_arrivals_p(won, total, base_won, base_total)
            above = fewer_arrivals_p(base_won, base_total, won, total)
            mark = '  below' if below < 0.05 else '  above' if above < 0.05 else ''
            lines.append(f'{arm:{live.ARM_WIDTH}s} {window:>6d} {f"{won}/{total}":>8s} {f"{base_won}/{base_total}":>8s} '
                         f'{below:>8.3f} {above:>8.3f}{mark}')
    return '\n'.join(lines)


def plot(rows, arms, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for arm in arms:
        success = mean_by_window(rows, arm, 'success_rate')
        ends = {r['window']: r['end_s'] / 60 for r in rows}
        ax.plot([ends[w] for w in success], list(success.values()), marker='o', label=arm)
    ax.set_xlabel('simulated minutes (window end)')
    ax.set_ylabel('success rate in the window')
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == '__main__':
    sys.exit(main())
