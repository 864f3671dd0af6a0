"""Safe adaptation: judge each applied adapter by the episodes driven with it, against those before it and
against the unadapted planner, and keep the adapters' lifecycle (versions, trial, last good, rollback).

The adaptation node tells the judge about every finished episode and every adapter the planner applied.
After `episodes` episodes with a new adapter it gives a verdict, from two comparisons, each made twice at
the one-sided level that `margin` standard errors give (1.64: 5 %): the mean return (Welch's shortfall in
standard errors) and the number of arrivals (Fisher's exact test).
- The floor: the last `BASELINE` × `episodes` episodes driven with adapters in force (kept or on trial)
  against the last `BASELINE` × `episodes` driven with none — the unadapted planner on this task. Falling
  below it means back to the plain base, every adapter. Without it the bar below ratchets: a chain of
  adapters each no worse than the one before beyond noise drifts anywhere (live, steering + behaviour: from
  8 of 8 arrivals to 0 of 22 with every step kept against its predecessor).
- The bar: the trial's episodes against the last `BASELINE` × `episodes` driven with the last good adapters
  (none at first) while nothing was on trial. Falling below it means back to the last good adapters.
The bar is also looked at after each trial episode before the last, at the one-sided level divided over the
`episodes` looks (Bonferroni: the looks together cannot roll back a harmless adapter more often than the
level again): an adapter that stops the car short fails it within a few episodes and is rolled back then,
not after all `episodes` of them (live, dynamics, one run: three rounds of timeouts after good ones, 7–8
episodes of 30 s each, were 11.5 of a 30-minute drive's minutes).
A new adapter is pushed only once `episodes` of the bar's have come in since the last verdict
(AdapterLifecycle.ready), twice as many after each rollback in a row, up to `2**MAX_DOUBLINGS` times: a
rejected trial's episodes are driven with an adapter that drives worse, and a finetuner whose adapters keep
failing (live, steering + behaviour: five rounds in a row arrived 0 times in 8) would otherwise spend half
the drive on them.
Standard errors, because consecutive episodes differ by their traffic far more than a harmless adapter
changes them: on the live dynamics pair with adaptation off (bench/bench_judge.py) the judge this replaced
— a fall of 20 % of the mean return, or 0.2 of the success rate, over 3 episodes — rolled back every one of
55 harmless adapters. Arrivals as well as returns, because an adapter that makes the car stop short of the
goal keeps most of the return (live, the episodes that timed out returned ≈ 0.6 of an arrival's) and so
passed a judge of returns alone.
"""
from __future__ import annotations

import collections
import dataclasses
import math
import os
from pathlib import Path
from statistics import NormalDist

BASELINE = 3            # good episodes kept as the bar, in units of the trial's `episodes`
MAX_DOUBLINGS = 3       # of the wait for the next trial after rollbacks in a row: at most 8 × `episodes`
MIN_VARIANCE = 1.0      # of a return, so two constant samples still compare (returns are in the hundreds)
MIN_LOOK = 3            # trial episodes before the first interim look: Welch's error from two is too noisy


@dataclasses.dataclass
class Verdict:
    version: int
    keep: bool
    reason: str
    to_base: bool = False     # rolled back past the last good adapters to none: the floor test failed


class AdapterJudge:
    def __init__(self, episodes: int, margin: float):
        """`episodes` and `margin`: LifecycleConfig's rollback_episodes and rollback_margin."""
        if episodes < 1 or margin < 0:
            raise ValueError('episodes must be >= 1 and margin >= 0')
        self.episodes, self.margin = episodes, margin
        level = 0.5 * math.erfc(margin / math.sqrt(2))          # one-sided
        self.look_margin = NormalDist().inv_cdf(1 - level / episodes) if level > 0 else math.inf
        self.before = collections.deque(maxlen=BASELINE * episodes)   # (return, arrived) of good episodes
        self.fresh = 0                # of them driven since the last verdict
        self.floor = collections.deque(maxlen=BASELINE * episodes)    # driven with no adapter in force
        self.adapted = collections.deque(maxlen=BASELINE * episodes)  # driven with adapters in force
        self.in_force = False         # whether kept adapters drive between trials
        self.rejections = 0           # rollbacks in a row
        self.trial: list[tuple[float, bool]] = []
        self.on_trial: int | None = None                     # version being judged

    def episode(self, episode_return: float, success: bool) -> Verdict | None:
        outcome = (episode_return, bool(success))
        if self.on_trial is None:
            self.before.append(outcome)
            self.fresh += 1
            (self.adapted if self.in_force else self.floor).append(outcome)
            return None
        self.trial.append(outcome)
        self.adapted.append(outcome)
        if len(self.trial) < self.episodes and not self._clearly_worse():
            return None
        verdict = self._judge()
        if verdict.keep:
            # a new good state: its bar is what it drives from now on. Not its trial episodes, which passed
            # this verdict because they happened to be good: a bar of them would sit high and roll back
            # the next harmless adapter (measured: 60 % of harmless adapters rolled back that way)
            self.before.clear()
            self.in_force = True
        self.rejections = 0 if verdict.keep else self.rejections + 1
        if verdict.to_base:
            self.before.clear()
            self.adapted.clear()
            self.in_force = False
        elif not verdict.keep:   # back to the last good adapters: the rejected one's episodes say nothing of them
            for _ in self.trial:
                self.adapted.pop()
        self.trial, self.on_trial, self.fresh = [], None, 0
        return verdict

    def has_bar(self) -> bool:
        """Whether `episodes` episodes of the last good state have come in since the last verdict (twice as
        many per rollback in a row, up to MAX_DOUBLINGS): each adapter is judged against traffic as recent as
        its own (else one lucky stretch at the start is the bar for every adapter after a rollback)."""
        return self.fresh >= self.episodes * 2 ** min(self.rejections, MAX_DOUBLINGS)

    def applied(self, version: int) -> None:
        """A new adapter is in force; the one on trial (if any) is superseded without a verdict, and its
        episodes stay out of the bar (not judged good)."""
        self.on_trial, self.trial = version, []

    def _clearly_worse(self) -> bool:
        """The interim look: the trial so far is worse than the bar at the level divided over the looks."""
        return (len(self.trial) >= MIN_LOOK and bool(self.before)
                and bool(self._worse(self.trial, self.before, self.look_margin)))

    def _judge(self) -> Verdict:
        """Worse than the bar: back to the last good adapters, or past them to the base if their own recent
        episodes fall below the floor. Else worse than the floor with the trial's episodes: back to the base."""
        worse = self._worse(self.trial, self.before, self.margin) if self.before else ''
        # the adapters that would drive on: without the trial's episodes when it is rolled back
        driving = list(self.adapted)[:len(self.adapted) - len(self.trial)] if worse else list(self.adapted)
        below_floor = self._worse(driving, self.floor, self.margin) if len(self.floor) >= self.episodes and driving else ''
        if below_floor:
            return Verdict(self.on_trial, False, f'the adapters drive worse than none: {below_floor} driven '
                           f'without adapters', to_base=True)
        if worse:
            return Verdict(self.on_trial, False, f'{worse} before')
        if not self.before:
            return Verdict(self.on_trial, True, 'no episodes before the adapter to compare with')
        new, base = [r for r, _ in self.trial], [r for r, _ in self.before]
        return Verdict(self.on_trial, True, f'mean return {sum(new) / len(new):.1f} and '
                       f'{sum(a for _, a in self.trial)} arrivals over {len(new)} episodes vs '
                       f'{sum(base) / len(base):.1f} and {sum(a for _, a in self.before)} over the {len(base)} '
                       f'before (margin {self.margin:.2f} standard errors)')

    def _worse(self, new, base, margin: float) -> str:
        """Why the (return, arrived) episodes `new` drive worse than `base` by `margin` standard errors (or
        arrivals at that one-sided level), or ''."""
        new_returns, base_returns = [r for r, _ in new], [r for r, _ in base]
        base_mean, new_mean = sum(base_returns) / len(base), sum(new_returns) / len(new)
        variance = lambda xs, m: max(sum((x - m) ** 2 for x in xs) / max(len(xs) - 1, 1), MIN_VARIANCE)
        error = math.sqrt(variance(base_returns, base_mean) / len(base) + variance(new_returns, new_mean) / len(new))
        shortfall = (base_mean - new_mean) / error
        if shortfall > margin:
            return (f'mean return fell from {base_mean:.1f} to {new_mean:.1f} over {len(new)} episodes: '
                    f'{shortfall:.1f} standard errors below the {len(base)}')
        base_arrived, new_arrived = sum(a for _, a in base), sum(a for _, a in new)
        p = fewer_arrivals_p(new_arrived, len(new), base_arrived, len(base))
        level = 0.5 * math.erfc(margin / math.sqrt(2))
        if p < level:
            return (f'arrivals fell from {base_arrived} of {len(base)} to {new_arrived} of {len(new)} episodes '
                    f'(one-sided p {p:.3f} < {level:.3f}) against the {len(base)}')
        return ''


def fewer_arrivals_p(new_arrived: int, new_count: int, base_arrived: int, base_count: int) -> float:
    """Fisher's exact one-sided p: the chance that `new_count` episodes drawn from the pooled ones (without
    replacement) hold at most `new_arrived` arrivals, were the arrival rate the same before and after."""
    total, arrived = new_count + base_count, new_arrived + base_arrived
    ways = lambda k: math.comb(arrived, k) * math.comb(total - arrived, new_count - k)
    return sum(ways(k) for k in range(0, new_arrived + 1)) / math.comb(total, new_count)


class AdapterLifecycle:
    """The life of the adapters one finetuning run pushes to a planner: the version counter (kept in
    `state_dir`, never reused, across restarts too), the sides trained since the last push, the adapters on
    trial and the last good ones, and what a verdict means. It decides; the caller does the talking.

    One round of adapters is on trial at a time: the next push waits for the verdict on it. Without a judge
    (`judge=None`) every applied adapter counts as good at once."""

    def __init__(self, state_dir: str | Path, judge: AdapterJudge | None):
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.judge = judge
        self.version = self._load_version()
        self.touched: set[str] = set()        # sides trained since the last push
        self.on_trial: dict[str, object] = {}  # target -> adapter applied, not yet judged
        self.last_good: dict[str, object] = {}

    def trained(self, sides) -> None:
        self.touched.update(sides)

    def ready(self) -> bool:
        """Whether a round may be pushed now: something was trained, nothing is on trial, and the judge has
        its bar (episodes driven with the last good adapters)."""
        judged = self.judge is None or self.judge.has_bar()
        return bool(self.touched) and not self.on_trial and judged

    def take_round(self) -> list[str]:
        """The sides to export in this round (and forget them as touched)."""
        targets, self.touched = sorted(self.touched), set()
        return targets

    def next_version(self) -> int:
        self.version += 1
        tmp = self.state_dir / '.version.tmp'
        tmp.write_text(f'{self.version}\n')
        os.replace(tmp, self.state_dir / 'version')
        return self.version

    def applied(self, adapters: dict) -> None:
        """The planner accepted these adapters (target -> adapter with .meta.version): they go on trial
        together. Call before anyone can report an episode driven with them."""
        if not adapters:
            return
        if self.judge is None:
            self.last_good.update(adapters)
            return
        self.on_trial.update(adapters)
        self.judge.applied(max(adapter.meta.version for adapter in self.on_trial.values()))

    def episode(self, episode_return: float, success: bool) -> Verdict | None:
        return self.judge.episode(episode_return, success) if self.judge else None

    def settle(self, verdict: Verdict) -> list[tuple[str, object, object | None]]:
        """Acts on a verdict. Kept: the adapters on trial become the last good ones; returns []. Rolled back:
        returns (target, bad adapter, last good adapter or None for the plain base) per adapter on trial,
        and, back to the base, per last good adapter too."""
        trial, self.on_trial = self.on_trial, {}
        if verdict.keep:
            self.last_good.update(trial)
            return []
        if verdict.to_base:
            bad, self.last_good = {**self.last_good, **trial}, {}
            return [(target, adapter, None) for target, adapter in sorted(bad.items())]
        return [(target, bad, self.last_good.get(target)) for target, bad in sorted(trial.items())]

    def _load_version(self) -> int:
        try:
            return int((self.state_dir / 'version').read_text().strip())
        except (OSError, ValueError):
            return 0
