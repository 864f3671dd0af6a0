"""What keeps a planner honest about time and about its inputs, free of ROS so it is tested without DDS.

FaultHold: hysteresis for untrustworthy inputs. After a fault (a non-finite or absurd message, stale inputs,
time running backwards) the planner stays stopped until frames have been clean for `hold` seconds of
simulation time, so an input stream that interleaves good and bad messages never drives.

FrameLog: what a planner did with the frames it got: latency per frame and the frames that came and went
unanswered (gaps in the frames' stamps), for /diagnostics.

PlanBudget: the anytime planner's bookkeeping. A decision gets `budget_s` of wall time from its frame's
arrival; the step time the planner measured is fed back as the next decision's estimate (lowered after a
fallback, so one load spike does not stop planning for good), and what the decisions could afford is kept
for /diagnostics.
"""
from __future__ import annotations

import collections

import numpy as np


class FaultHold:
    def __init__(self, hold: float):
        self.hold = hold
        self.last_fault, self.clean_since = '', None

    def fault(self, reason: str) -> None:
        self.last_fault, self.clean_since = reason, None

    def check(self, stamp: float, fault: str | None) -> str | None:
        """Why the frame at `stamp` must not be planned on — the fault itself, or the hold after the last
        one — or None."""
        if fault is not None:
            self.fault(fault)
            return fault
        if self.last_fault:
            self.clean_since = stamp if self.clean_since is None else self.clean_since
            if stamp - self.clean_since < self.hold - 1e-6:
                return f'holding: inputs clean for {stamp - self.clean_since:.2f} of {self.hold} s after: {self.last_fault}'
            self.last_fault = ''
        return None


class PlanBudget:
    def __init__(self, budget_s: float):
        self.budget_s = budget_s
        self.step_estimate = None                       # s per imagined step, as last measured
        self.score_estimate = None                      # s of scoring per imagined step, as last measured
        self.afforded = collections.deque(maxlen=200)   # horizon each recent decision could afford
        self.fallbacks = 0                               # decisions answered by the actor alone

    def deadline(self, frame_started: float | None) -> float | None:
        """The time.perf_counter() by which a decision on a frame that arrived at `frame_started` is due."""
        return frame_started + self.budget_s if frame_started is not None and self.budget_s > 0 else None

    def record(self, info: dict) -> None:
        """What a plan's info says it could afford."""
        self.afforded.append(info['horizon'])
        self.fallbacks += info['fallback']
        if info['fallback'] and self.step_estimate:
            self.step_estimate *= 0.9
        elif info['step_seconds']:
            self.step_estimate, self.score_estimate = info['step_seconds'], info['score_seconds']

    def report(self) -> dict[str, str]:
        afforded = list(self.afforded)
        return {'budget_ms': f'{1000 * self.budget_s:g}', 'plan_fallbacks': str(self.fallbacks),
                'afforded_horizon_p50': f'{np.percentile(afforded, 50):.0f}' if afforded else '',
                'afforded_horizon_min': str(min(afforded)) if afforded else ''}


class FrameLog:
    def __init__(self):
        self.latencies = collections.deque(maxlen=2000)   # s, the last frames'
        self.frames = self.missed = 0
        self.last_stamp, self.period = None, None          # the frames' period: the smallest gap seen

    def record(self, stamp: float, latency: float) -> None:
        if self.last_stamp is not None and stamp > self.last_stamp:
            gap = stamp - self.last_stamp
            self.period = gap if self.period is None else min(self.period, gap)
            self.missed += max(0, round(gap / self.period) - 1)
        self.last_stamp = stamp
        self.latencies.append(latency)
        self.frames += 1

    def report(self) -> dict[str, str]:
        ms = np.array(self.latencies) * 1000 if self.latencies else np.zeros(1)
        return {'tick_latency_p50_ms': f'{np.percentile(ms, 50):.2f}', 'tick_latency_p99_ms': f'{np.percentile(ms, 99):.2f}',
                'frames': str(self.frames), 'missed_frames': str(self.missed)}
