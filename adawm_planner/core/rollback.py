"""Safe adaptation: judge each applied adapter by the episodes driven with it, against those before it, and
keep the adapters' lifecycle (versions, trial, last good, rollback).

The adaptation node tells the judge about every finished episode and every adapter the planner applied.
After `episodes` episodes with a new adapter, its mean return is compared with the mean over the last
`episodes` episodes before it: falling short by more than `margin` (relative to the larger of |baseline|
and 1) — or losing more than `margin` of success rate — means roll back to the last good adapter.
"""
from __future__ import annotations

import collections
import dataclasses
import os
from pathlib import Path


@dataclasses.dataclass
class Verdict:
    version: int
    keep: bool
    reason: str


class AdapterJudge:
    def __init__(self, episodes: int = 3, margin: float = 0.2):
        if episodes < 1 or margin < 0:
            raise ValueError('episodes must be >= 1 and margin >= 0')
        self.episodes, self.margin = episodes, margin
        self.before = collections.deque(maxlen=episodes)   # (return, success) before the adapter on trial
        self.trial: list[tuple[float, bool]] = []
        self.on_trial: int | None = None                     # version being judged

    def episode(self, episode_return: float, success: bool) -> Verdict | None:
        if self.on_trial is None:
            self.before.append((episode_return, success))
            return None
        self.trial.append((episode_return, success))
        if len(self.trial) < self.episodes:
            return None
        verdict = self._judge()
        if verdict.keep:   # the kept adapter's episodes are the bar for the next; a rolled-back one's are not
            self.before.clear()
            self.before.extend(self.trial[-self.episodes:])
        self.trial, self.on_trial = [], None
        return verdict

    def applied(self, version: int) -> None:
        """A new adapter is in force; the one on trial (if any) is superseded without a verdict."""
        if self.on_trial is not None and self.trial:   # with nothing driven on it, the bar stands
            self.before.clear()
            self.before.extend(self.trial[-self.episodes:])
        self.on_trial, self.trial = version, []

    def _judge(self) -> Verdict:
        if not self.before:
            return Verdict(self.on_trial, True, 'no episodes before the adapter to compare with')
        mean = lambda rows, i: sum(r[i] for r in rows) / len(rows)
        base_return, new_return = mean(self.before, 0), mean(self.trial, 0)
        base_success, new_success = mean(self.before, 1), mean(self.trial, 1)
        allowed = self.margin * max(abs(base_return), 1.0)
        if new_return < base_return - allowed:
            return Verdict(self.on_trial, False, f'mean return fell from {base_return:.1f} to {new_return:.1f} '
                           f'over {len(self.trial)} episodes (margin {self.margin:.0%})')
        if new_success < base_success - self.margin:
            return Verdict(self.on_trial, False, f'success rate fell from {base_success:.2f} to {new_success:.2f}')
        return Verdict(self.on_trial, True, f'mean return {new_return:.1f} vs {base_return:.1f} before')


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
        """Whether a round may be pushed now: something was trained and nothing is on trial."""
        return bool(self.touched) and not self.on_trial

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
        returns (target, bad adapter, last good adapter or None for the plain base) per adapter on trial."""
        trial, self.on_trial = self.on_trial, {}
        if verdict.keep:
            self.last_good.update(trial)
            return []
        return [(target, bad, self.last_good.get(target)) for target, bad in sorted(trial.items())]

    def _load_version(self) -> int:
        try:
            return int((self.state_dir / 'version').read_text().strip())
        except (OSError, ValueError):
            return 0
