"""How often does the rollback judge throw away a harmless adapter, and how often does it catch a harmful one or
a drifting chain?

The judge (core/rollback.AdapterJudge) compares the episodes driven with adapters against those before them
and against those driven without any (the floor). Replayed here on the episodes of live runs with adaptation
off (bench_live.py's runs.json): nothing changes between episodes there, so an adapter "applied" at any point
is harmless by construction and every rollback is a false one. The same streams with a harmful adapter: while
it is on trial each episode fails with probability `--harm` (drawn from a fixed seed; its return becomes the
stream's mean failed return), or, with `--stall`, stops short of the goal: no arrival, and a return of
STALL_RETURN × the stream's mean arrival return (what the live AdaWM episodes that timed out kept). And a
drifting chain: each adapter fails `--drift` more often than the last good one, so each step is small and the
chain's sum is not.

    .venv/bin/python bench/bench_judge.py runs/live/dynamics/runs.json [more runs.json ...]

For each judge setting (episodes on trial, margin), the judge (`looks`), the same without its interim looks
(`final`: a verdict only after all `episodes` of a trial; until 2026-12-01 07:40 UTC) and the one before
(`bar`: each adapter against the last good one's episodes alone, no backing off after rollbacks), it prints the
verdicts replayed, the share of harmless adapters rolled back (and of them back to the base), the share of
harmful ones caught, and the arrivals kept of the stream's own with the harmful adapters and with the drifting
chain, so the live loop's defaults can be chosen by measurement (an adapter is pushed as soon as the judge
has its bar, as the adaptation node does; a harmful adapter kept goes on harming).
"""
import argparse
import collections
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


def replay(judge: AdapterJudge, stream, harm: float, rng, stall: bool = False, drift: float = 0.0,
           share: float = 1.0) -> dict:
    """Verdicts, rollbacks (to the base among them) and arrivals over `stream`, an adapter applied whenever
    none is on trial. An adapter on trial fails each episode with probability `harm`; or, with `drift`, with
    the last good adapter's probability plus `drift` — a chain each step of which is a little worse. Kept
    adapters go on failing at their probability; a rollback restores the last good one's (0 at the base).
    With `share` < 1 only that share of the adapters is harmful, the rest harmless: a finetuner whose rounds
    mostly drive as well as the last good one, now and then one that breaks."""
    failed = [r for r, success in stream if not success]
    arrived = [r for r, success in stream if success]
    failed_return = (STALL_RETURN * float(np.mean(arrived)) if stall and arrived else
                     float(np.mean(failed)) if failed else 0.0)
    counts = dict(verdicts=0, rollbacks=0, to_base=0, arrivals=0)
    version, good, trial = 0, 0.0, 0.0
    for episode_return, success in stream:
        if judge.on_trial is None and judge.has_bar():
            version += 1
            judge.applied(version)
            trial = min(good + drift, 1.0) if drift else harm if share >= 1 or rng.random() < share else good
        if rng.random() < (trial if judge.on_trial is not None else good):
            episode_return, success = failed_return, False
        counts['arrivals'] += success
        verdict = judge.episode(episode_return, success)
        if verdict is not None:
            counts['verdicts'] += 1
            counts['rollbacks'] += not verdict.keep
            counts['to_base'] += verdict.to_base
            good = trial if verdict.keep else 0.0 if verdict.to_base else good
    return counts


class FinalOnly(AdapterJudge):
    """The judge without interim looks: a verdict after all `episodes` of a trial."""

    def _clearly_worse(self) -> bool:
        return False


class BarOnly(FinalOnly):
    """The judge before 2026-12-01: each adapter against the last good one's episodes alone (no floor), the
    next trial after `episodes` of them whatever came before (no backing off)."""

    def __init__(self, episodes: int, margin: float):
        super().__init__(episodes, margin)
        self.floor = collections.deque(maxlen=0)

    def has_bar(self) -> bool:
        return self.fresh >= self.episodes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('runs', nargs='+', help="bench_live.py runs.json files (their 'off' arms are replayed)")
    parser.add_argument('--episodes', type=int, nargs='+', default=[8])
    parser.add_argument('--margins', type=float, nargs='+', default=[1.64])
    parser.add_argument('--harm', type=float, default=0.5, help='failure probability of an episode on a harmful '
                        'adapter (default 0.5)')
    parser.add_argument('--drift', type=float, default=0.1, help='failure probability each adapter of the '
                        'drifting chain adds to the last good one (default 0.1)')
    parser.add_argument('--share', type=float, default=0.25, help='share of harmful adapters in the mixed stream, '
                        'the rest harmless (default 0.25)')
    parser.add_argument('--repeats', type=int, default=20, help='draws of the failures averaged (default 20)')
    parser.add_argument('--stall', action='store_true', help='a failing episode stops the car short of the goal')
    args = parser.parse_args(argv)
    streams = off_streams(args.runs)
    if not streams:
        print('bench_judge: no adaptation-off runs in ' + ', '.join(args.runs), file=sys.stderr)
        return 2
    episodes = sum(len(s) for s in streams)
    arrivals = sum(ok for s in streams for _, ok in s)
    print(f'bench_judge: {len(streams)} adaptation-off runs, {episodes} episodes, success rate {arrivals / episodes:.2f}; '
          f'a harmful adapter {"stops short in" if args.stall else "fails"} each episode with probability '
          f'{args.harm:g}; each adapter of the drifting chain adds {args.drift:g}; in the mixed stream '
          f'{args.share:g} of the adapters are harmful')
    print(f'{"episodes":>8s} {"margin":>6s} {"judge":>6s} {"verdicts":>8s} {"harmless rolled back":>21s} '
          f'{"(to base)":>9s} {"harmful caught":>15s} {"arrivals kept":>13s} {"drifting: arrivals kept":>24s} '
          f'{"mixed: arrivals kept":>21s}')
    for n in args.episodes:
        for margin in args.margins:
            for name, make in (('looks', AdapterJudge), ('final', FinalOnly), ('bar', BarOnly)):
                def total(harm, drift=0.0, share=1.0):
                    # one verdict changes every later one, so a single draw of the failures is noisy: averaged
                    # over `repeats` draws (the harmless replay draws nothing)
                    repeats = args.repeats if harm or drift else 1
                    runs = [replay(make(n, margin), s, harm, np.random.default_rng(seed), args.stall, drift, share)
                            for seed in range(repeats) for s in streams]
                    return {k: sum(r[k] for r in runs) / repeats for k in runs[0]}
                harmless, harmful, drifting = total(0.0), total(args.harm), total(0.0, args.drift)
                mixed = total(args.harm, share=args.share)
                share = lambda c, k: c[k] / max(c['verdicts'], 1)
                print(f'{n:8d} {margin:6.2f} {name:>6s} {harmless["verdicts"]:8.0f} {share(harmless, "rollbacks"):21.2f} '
                      f'{share(harmless, "to_base"):9.2f} {share(harmful, "rollbacks"):15.2f} '
                      f'{harmful["arrivals"] / max(arrivals, 1):13.2f} {drifting["arrivals"] / max(arrivals, 1):24.2f} '
                      f'{mixed["arrivals"] / max(arrivals, 1):21.2f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
