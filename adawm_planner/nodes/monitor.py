"""A listener that tallies what the stack does: frames, commands, episodes, mismatch decisions, adapters,
the planner's own diagnostics. `make demo` summarises a run with it; the end-to-end test asserts on it."""
from __future__ import annotations

import collections

from adawm_msgs.msg import AdapterStatus, EpisodeOutcome, MismatchReport
from carla_msgs.msg import CarlaEgoVehicleControl
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry
from rclpy.node import Node

from adawm_planner.nodes import qos
from adawm_planner.nodes.convert import stamp_seconds

OUTCOME_NAMES = {EpisodeOutcome.OUTCOME_SUCCESS: 'success', EpisodeOutcome.OUTCOME_COLLISION: 'collision',
                 EpisodeOutcome.OUTCOME_OFF_ROUTE: 'off_route', EpisodeOutcome.OUTCOME_TIMEOUT: 'timeout',
                 EpisodeOutcome.OUTCOME_RESET: 'reset'}
DECISION_NAMES = {MismatchReport.DECISION_NONE: 'none', MismatchReport.DECISION_UPDATE_MODEL: 'model',
                  MismatchReport.DECISION_UPDATE_POLICY: 'policy'}
STATE_NAMES = {AdapterStatus.STATE_APPLIED: 'applied', AdapterStatus.STATE_REJECTED: 'rejected',
               AdapterStatus.STATE_ROLLED_BACK: 'rolled_back'}


class StackMonitor(Node):
    def __init__(self, role: str = 'ego_vehicle', context=None):
        super().__init__('adawm_monitor', context=context)
        self.frame_stamps: list[float] = []
        self.command_stamps: list[float] = []
        self.episodes: list[EpisodeOutcome] = []
        self.reports: list[MismatchReport] = []
        self.statuses: list[AdapterStatus] = []
        self.diagnostics: dict[str, str] = {}
        self.planner_up_at: float | None = None   # sim time of the newest frame when the planner first reported
        ns = f'/carla/{role}'
        self.create_subscription(Odometry, f'{ns}/odometry',
                                 lambda m: self.frame_stamps.append(stamp_seconds(m.header.stamp)), qos.COUNT_IN)
        self.create_subscription(CarlaEgoVehicleControl, f'{ns}/vehicle_control_cmd',
                                 lambda m: self.command_stamps.append(stamp_seconds(m.header.stamp)), qos.COUNT_IN)
        self.create_subscription(EpisodeOutcome, '/adawm/episode', self.episodes.append, qos.EVENTS_IN)
        self.create_subscription(MismatchReport, '/adawm/mismatch', self.reports.append, qos.EVENTS_IN)
        self.create_subscription(AdapterStatus, '/adawm/adapter_status', self.statuses.append, qos.EVENTS_IN)
        self.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, qos.EVENTS_IN)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == 'adawm/planner':
                if self.planner_up_at is None and self.frame_stamps:
                    self.planner_up_at = self.frame_stamps[-1]
                self.diagnostics = {kv.key: kv.value for kv in status.values}
                self.diagnostics['message'] = status.message

    def command_coverage(self, since: float | None = None) -> float:
        """Fraction of simulation frames answered by a control command stamped with that frame's time, from
        the planner's first answer once it is up (its first diagnostics), or from sim time `since`, if later.
        The bridge runs from its own start: frames before the planner has loaded its checkpoint (seconds on a
        starved CPU) and got its map are start-up (`first_answer`), not frames a running planner failed; its
        safe stop before any map arrives is stamped 0, which is also the first frame's time."""
        start = self.first_answer()
        if start is None:
            return 0.0
        answered = set(round(s, 3) for s in self.command_stamps)
        frames = [s for s in self.frame_stamps if s >= max(start, since or 0.0)]
        return sum(round(s, 3) in answered for s in frames) / max(len(frames), 1)

    def first_answer(self) -> float | None:
        """Sim time of the first frame the planner answered after it was up; None before."""
        if self.planner_up_at is None:
            return None
        answered = set(round(s, 3) for s in self.command_stamps)
        return next((s for s in self.frame_stamps if s >= self.planner_up_at and round(s, 3) in answered), None)

    def all_up_since(self) -> float | None:
        """Sim time from which planner and adaptation node both work: the first mismatch report's stamp."""
        return stamp_seconds(self.reports[0].header.stamp) if self.reports else None

    def summary(self) -> dict:
        outcomes = collections.Counter(OUTCOME_NAMES[e.outcome] for e in self.episodes)
        decisions = collections.Counter(DECISION_NAMES[r.decision] for r in self.reports)
        # planner and adaptation node both announce an applied adapter: count each (target, version, state) once
        unique = {(s.target, s.version, s.state): s for s in self.statuses}.values()
        adapters = collections.Counter(STATE_NAMES[s.state] for s in unique)
        rejected = [s.reason for s in self.statuses if s.state == AdapterStatus.STATE_REJECTED]
        return {'frames': len(self.frame_stamps), 'commands': len(self.command_stamps),
                'planner_up_at': self.planner_up_at, 'first_answer': self.first_answer(),
                'command_coverage': self.command_coverage(),
                'command_coverage_all_up': self.command_coverage(self.all_up_since()), 'episodes': len(self.episodes),
                'outcomes': dict(outcomes), 'mismatch_reports': len(self.reports), 'decisions': dict(decisions),
                'adapters': dict(adapters), 'rejection_reasons': rejected, 'planner': dict(self.diagnostics)}
