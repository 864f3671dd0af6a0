"""Safe adaptation: judge each applied adapter by the episodes driven with it, against those before it.

The adaptation node tells the judge about every finished episode and every adapter the planner applied.
After `episodes` episodes with a new adapter, its mean return is compared with the mean over the last
`episodes` episodes before it: falling short by more than `margin` (relative to the larger of |baseline|
and 1) — or losing more than `margin` of success rate — means roll back to the last good adapter.
"""
from __future__ import annotations

import collections
import dataclasses


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
