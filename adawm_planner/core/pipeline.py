"""From timestamped frames to model steps: one gating rule and one episode tracker for everything that turns
a drive into the model's steps — the embedded env, the planner node, the adaptation node, offline analysis.

Gating: a frame is a model step when it is the first frame of a new `step_period` on a grid of simulation
time anchored at the episode's first frame. A bridge faster than the model (20 Hz frames, 10 Hz steps) thus
steps on the same frames live and on replay, and an env stepping at the model's period steps on every frame.

Episodes: a new one starts at the first frame, when the route changes (a new route message is a new task
instance), when simulation time runs backwards (a simulator reset), and after `restart()` (e.g. the planner
came back from a safe stop). Its first step carries no control and no reward — as an env's reset does — and
`is_first`, which resets the world model's latent state.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from adawm_planner.core import metrics
from adawm_planner.core.bev import rasterize
from adawm_planner.core.contract import Contract
from adawm_planner.core.scene import Scene

NO_CONTROL = (0.0, 0.0, 0.0)   # (throttle, steer, brake) of an episode's first observation
TIME_TOLERANCE = 1e-6          # s: stamps closer than this are the same instant


@dataclasses.dataclass
class Step:
    stamp: float
    obs: dict                  # {'bev': (S, S, 5) uint8, 'ego': (E,) float32}
    reward: float              # received on arriving at this step (0 at an episode's first step)
    reward_terms: dict
    is_first: bool
    episode: int               # counts episodes from 0
    progress: metrics.RouteProgress
    scene: Scene
    control: tuple             # (throttle, steer, brake) the ego vector carries


class StepPipeline:
    def __init__(self, contract: Contract):
        if tuple(contract.ego_features) != metrics.EGO_FEATURES:
            raise ValueError(f'the contract\'s ego features {list(contract.ego_features)} are not the ones this '
                             f'version computes ({list(metrics.EGO_FEATURES)})')
        self.contract = contract
        self.episode = -1
        self._anchor = None    # stamp of the episode's first frame; None: the next frame starts an episode
        self._index = -1       # grid index of the last step
        self._last_stamp = None
        self._route = None
        self.tracker = None
        self._collided = False   # a collision on a frame between two steps counts at the next step

    def restart(self) -> None:
        """The next frame starts a new episode (the latent state starts over)."""
        self._anchor = None

    def _starts_episode(self, stamp: float, route) -> bool:
        backwards = self._last_stamp is not None and stamp < self._last_stamp - TIME_TOLERANCE
        return self._anchor is None or backwards or route is not self._route

    def due(self, stamp: float, route) -> bool:
        """Whether a frame at `stamp` on `route` would be a model step (changes nothing): lets a reader
        leave the messages of frames between steps undecoded."""
        if self._starts_episode(stamp, route):
            return True
        return int(np.floor((stamp - self._anchor) / self.contract.step_period + TIME_TOLERANCE)) > self._index

    def step(self, stamp: float, scene: Scene, control=NO_CONTROL) -> Step | None:
        """The model step of a frame, or None when the frame falls between two steps.
        `control` is the (throttle, steer, brake) in force since the last step."""
        is_first = self._starts_episode(stamp, scene.route)
        self._last_stamp = stamp
        if is_first:
            self.episode += 1
            self._anchor, self._index = stamp, -1
            self._route, self.tracker = scene.route, metrics.RouteTracker(scene.route)
            self._collided, control = False, NO_CONTROL
        index = int(np.floor((stamp - self._anchor) / self.contract.step_period + TIME_TOLERANCE))
        self._collided |= bool(scene.collision) and not is_first
        if index <= self._index:
            return None
        self._index = index
        if not is_first and self._collided != scene.collision:
            scene = dataclasses.replace(scene, collision=self._collided)
        self._collided = False
        progress = self.tracker.update(scene.ego.x, scene.ego.y)
        control = tuple(float(c) for c in control)
        obs = {'bev': rasterize(scene, self.contract.bev), 'ego': metrics.ego_features(scene, control, progress)}
        terms = {} if is_first else metrics.reward_terms(scene, progress, self.contract.v_des)
        return Step(stamp, obs, float(sum(terms.values())), terms, is_first, self.episode, progress, scene, control)
