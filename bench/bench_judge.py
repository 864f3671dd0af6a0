"""How often does the rollback judge throw away a harmless adapter, and how often does it catch a harmful one?

The judge (core/rollback.AdapterJudge) compares the episodes driven with a new adapter against those before
it. Replayed here on the episodes of live runs with adaptation off (bench_live.py's runs.json): nothing
changes between episodes there, so an adapter "applied" at any point is harmless by construction and every
rollback is a false one. The same streams with a harmful adapter: while it is on trial each episode fails
with probability `--harm` (drawn from a fixed seed; its return becomes the stream's mean failed return), or,
with `--stall`, stops short of the goal: no arrival, and a return of STALL_RETURN × the stream's mean
arrival return (what the live AdaWM episodes that timed out kept).

    .venv/bin/python bench/bench_judge.py runs/live/dynamics/runs.json [more runs.json ...]

For each judge setting (episodes on trial, margin) it prints the verdicts replayed, the share of harmless
adapters rolled back and the share of harmful ones caught, so the live loop's defaults can be chosen by
measurement (an adapter is pushed again as soon as the previous verdict is in, as the adaptation node does).
"""
import argparse
import json
import sys

import numpy as np

from adawm_planner.core.rollback import AdapterJudge


def off_streams(paths) -> list[list[tuple[float, bool]]]:
    streams = []
    for path in paths:
        for run in json.loads(open(path).read()):
            if run['arm'] == 'off':
                streams.append([(e['return'], e['outcome'] == 'success') for e in run['episode_list']])
    return streams


STALL_RETURN = 0.6   # live dynamics pair, AdaWM: timeouts returned 185-233, arrivals 296-387 (runs.json)


def replay(judge: AdapterJudge, stream, harm: float, rng, stall: bool = False) -> tuple[int, int]:
    """(verdicts, rollbacks) over `stream`, an adapter applied whenever none is on trial."""
    failed = [r for r, success in stream if not success]
    arrived = [r for r, success in stream if success]
    failed_return = (STALL_RETURN * float(np.mean(arrived)) if stall and arrived else
                     float(np.mean(failed)) if failed else 0.0)
    verdicts = rollbacks = 0
    version = 0
    for episode_return, success in stream:
        if judge.on_trial is None and judge.has_bar():
            version += 1
            judge.applied(version)
        if judge.on_trial is not None and rng.random() < harm:
            episode_return, success = failed_return, False
        verdict = judge.episode(episode_return, success)
        if verdict is not None:
            verdicts += 1
            rollbacks += not verdict.keep
    return verdicts, rollbacks


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('runs', nargs='+', help="bench_live.py runs.json files (their 'off' arms are replayed)")
    parser.add_argument('--episodes', type=int, nargs='+', default=[3, 5, 8])
    parser.add_argument('--margins', type=float, nargs='+', default=[0.2, 0.3, 0.5])
    parser.add_argument('--harm', type=float, default=0.5, help='failure probability of an episode on a harmful '
                        'adapter (default 0.5)')
    parser.add_argument('--stall', action='store_true', help='the harmful adapter stops the car short of the goal')
    args = parser.parse_args(argv)
    streams = off_streams(args.runs)
    if not streams:
        print('bench_judge: no adaptation-off runs in ' + ', '.join(args.runs), file=sys.stderr)
        return 2
    episodes = sum(len(s) for s in streams)
    success = sum(ok for s in streams for _, ok in s) / episodes
    print(f'bench_judge: {len(streams)} adaptation-off runs, {episodes} episodes, success rate {success:.2f}; '
          f'a harmful adapter {"stops short in" if args.stall else "fails"} each episode with probability {args.harm:g}')
    print(f'{"episodes":>8s} {"margin":>6s} {"verdicts":>8s} {"harmless rolled back":>21s} {"harmful caught":>15s}')
    for n in args.episodes:
        for margin in args.margins:
            rows = []
            for harm in (0.0, args.harm):
                rng = np.random.default_rng(0)
                counts = [replay(AdapterJudge(n, margin), s, harm, rng, args.stall) for s in streams]
                verdicts, rollbacks = (sum(c[i] for c in counts) for i in (0, 1))
                rows.append((verdicts, rollbacks / max(verdicts, 1)))
            print(f'{n:8d} {margin:6.2f} {rows[0][0]:8d} {rows[0][1]:21.2f} {rows[1][1]:15.2f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
