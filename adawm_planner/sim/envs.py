"""The gymnasium env of every task: a highway-env scenario driven by CARLA-style controls, observed
through the Scene -> BEV + ego vector path, rewarded by core.metrics."""
from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np

from adawm_planner.core import metrics
from adawm_planner.core.actions import MAX_STEER_ANGLE, PEDAL_ACCELERATION, discrete_to_control
from adawm_planner.core.bev import BevSpec, rasterize, to_rgb
from adawm_planner.core.contract import Contract
from adawm_planner.core.pipeline import StepPipeline
from adawm_planner.sim import scene_source
from adawm_planner.sim.scenarios import SCENARIOS, driver_class


def control_to_sim(throttle: float, steer: float, brake: float, vehicle: dict | None = None) -> tuple[float, float]:
    """CARLA control (throttle 0..1, steer −1..1 with + = right, brake 0..1) -> highway-env's
    (acceleration m/s², steering angle rad). highway-env's y-down frame has CARLA's handedness, so
    + steering turns right there too. The one place any action enters the simulator.

    `vehicle` (tasks.yaml `vehicle:`) scales the response: steer_gain (wheel angle per unit steer, a
    steering-ratio change), throttle_gain and brake_gain (engine and brake power). Gains of 1 (the
    default) give exactly the unscaled values."""
    throttle, brake = float(np.clip(throttle, 0, 1)), float(np.clip(brake, 0, 1))
    steering = float(np.clip(steer, -1, 1)) * MAX_STEER_ANGLE
    if vehicle is None:
        return PEDAL_ACCELERATION * (throttle - brake), steering
    return (PEDAL_ACCELERATION * (throttle * vehicle['throttle_gain'] - brake * vehicle['brake_gain']),
            steering * vehicle['steer_gain'])


class DrivingEnv(gym.Env):
    """One task. Observation {"bev": (S, S, 5) uint8, "ego": (9,) float32 — core.metrics.EGO_FEATURES};
    action Discrete(15), or with continuous=True Box([-1, -1], [1, 1]) = (throttle − brake, steer).
    Observations and rewards come from core's StepPipeline, as in the ROS nodes."""
    metadata = {'render_modes': ['rgb_array'], 'render_fps': 10}

    def __init__(self, name: str, spec: dict, accelerations, steers, seed: int | None = None,
                 continuous: bool = False, dt: float = 0.1, bev_size: int = 64, render_mode: str | None = None):
        # the task's fields; not `spec`, which gymnasium.make overwrites with its EnvSpec
        self.name, self.task, self.dt, self.continuous = name, spec, float(dt), continuous
        self.accelerations, self.steers = list(accelerations), list(steers)
        self.bev_spec = BevSpec(size=bev_size)
        self.max_steps = int(round(spec['time_limit'] / self.dt))
        self.render_mode = render_mode
        frequency = int(round(1 / self.dt))
        assert abs(frequency * self.dt - 1) < 1e-9, f'dt must divide 1 s, got {dt}'
        # the lag is a time, so the car is the same at any step length (10 Hz here, 20 Hz behind the ROS bridge)
        self.lag_steps = int(round(spec['vehicle']['lag'] / self.dt))
        if abs(self.lag_steps * self.dt - spec['vehicle']['lag']) > 1e-9:
            raise ValueError(f"task {name}: vehicle.lag {spec['vehicle']['lag']} s is not a whole number of "
                             f'{self.dt} s steps')
        traffic = dict(spec['traffic'])
        if 'spawn_rate' in traffic:   # spawn attempts per second in tasks.yaml -> probability per step
            traffic['spawn_probability'] = min(traffic['spawn_rate'] * self.dt, 1.0)
        task = dict(spec, traffic=traffic)
        config = {'task': task, 'simulation_frequency': frequency, 'policy_frequency': frequency,
                  'action': {'type': 'ContinuousAction'}, 'duration': 1e9, 'offscreen_rendering': True,
                  'screen_width': 600, 'screen_height': 600,
                  'other_vehicles_type': driver_class(spec['drivers_name'], spec['drivers']),
                  **spec['geometry'], **spec['traffic']}
        self.sim = SCENARIOS[spec['scenario']](config=config, render_mode=render_mode)
        self.observation_space = gym.spaces.Dict({
            'bev': gym.spaces.Box(0, 255, (bev_size, bev_size, 5), np.uint8),
            'ego': gym.spaces.Box(-np.inf, np.inf, (len(metrics.EGO_FEATURES),), np.float32)})
        self.action_space = (gym.spaces.Box(-1.0, 1.0, (2,), np.float32) if continuous
                             else gym.spaces.Discrete(len(self.accelerations) * len(self.steers)))
        self._seed = seed
        self.lanes = None
        self.pipeline = StepPipeline(self.contract())

    def contract(self) -> Contract:
        """What a model trained on this env needs to drive it elsewhere (saved with its checkpoints)."""
        return Contract(step_period=self.dt, accelerations=tuple(self.accelerations), steers=tuple(self.steers),
                        v_des=float(self.task['v_des']), bev=self.bev_spec)

    # ---- gymnasium -------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        if seed is None:
            seed, self._seed = self._seed, None   # make_env's seed serves the first reset only
        self.sim.reset(seed=seed)
        if self.lanes is None:   # the road is rebuilt on every reset but never changes within a task
            self.lanes = scene_source.lanes_of(self.sim.road.network)
        self.route = self.sim.route_points() * scene_source.FLIP
        self.steps, self.acceleration, self.control = 0, 0.0, (0.0, 0.0, 0.0)
        # controls commanded but not yet applied: the actuation lag (vehicle.lag) starts coasting
        self.pending = [(0.0, 0.0, 0.0)] * self.lag_steps
        self.pipeline.restart()
        step = self.pipeline.step(0.0, self.scene(), self.control)
        self.progress = step.progress
        return step.obs, self._info(step.scene, {}, metrics.termination(step.scene, self.progress, 0, self.max_steps))

    def step(self, action):
        if self.continuous:
            pedal, steer = np.clip(np.asarray(action, np.float64), -1, 1)
            return self.step_control(max(pedal, 0.0), steer, max(-pedal, 0.0))
        return self.step_control(*discrete_to_control(action, self.accelerations, self.steers))

    def step_control(self, throttle: float, steer: float, brake: float):
        """Step with a CARLA-style control (what the ROS bridge feeds in)."""
        self.control = (float(np.clip(throttle, 0, 1)), float(np.clip(steer, -1, 1)), float(np.clip(brake, 0, 1)))
        self.pending.append(self.control)
        applied = self.pending.pop(0)
        speed_before = self.sim.vehicle.speed
        self.sim.advance(*control_to_sim(*applied, self.task['vehicle']))
        self.sim.step_traffic()
        self.acceleration = (self.sim.vehicle.speed - speed_before) / self.dt
        self.steps += 1
        step = self.pipeline.step(self.steps * self.dt, self.scene(), self.control)
        self.progress = step.progress
        outcome = metrics.termination(step.scene, self.progress, self.steps, self.max_steps)
        terminated = outcome['collision'] or outcome['success'] or outcome['off_route']
        return step.obs, step.reward, terminated, outcome['timeout'], self._info(step.scene, step.reward_terms, outcome)

    @property
    def tracker(self) -> metrics.RouteTracker:
        """The route tracker of the running episode (the scripted driver steers along it)."""
        return self.pipeline.tracker

    def scene(self):
        return scene_source.scene_of(self.sim.road, self.sim.vehicle, self.lanes, self.route, self.acceleration)

    def render(self):
        """The BEV (scaled up) beside highway-env's own top view."""
        import cv2
        view = self.sim.render()
        bev = to_rgb(rasterize(self.scene(), self.bev_spec))
        bev = cv2.resize(bev, (view.shape[0], view.shape[0]), interpolation=cv2.INTER_NEAREST)
        return np.concatenate([bev, np.full((view.shape[0], 8, 3), 255, np.uint8), view], axis=1)

    def close(self):
        self.sim.close()

    # ---- helpers ---------------------------------------------------------------------------------------
    def _info(self, scene, terms, outcome):
        return {**outcome, 'ttc': metrics.ttc(scene), 'route_completion': self.progress.completion,
                'steps': self.steps, **terms}


def resolve(tasks_config: dict, name: str) -> dict:
    """'BASE-TRAFFIC[-DRIVERS][@FIELD=VALUE,...]' -> the full task spec (inherited `base:` fields filled in,
    then the overrides after '@' applied: see override())."""
    named, _, assignments = name.partition('@')
    parts = named.split('-')
    if len(parts) not in (2, 3):
        raise KeyError(f'task name {name!r} is not BASE-TRAFFIC[-DRIVERS][@FIELD=VALUE,...]')
    base, traffic, drivers = parts[0], parts[1], parts[2] if len(parts) == 3 else 'normal'
    tasks = tasks_config['tasks']
    if base not in tasks:
        raise KeyError(f'unknown task {base!r}; known: {", ".join(tasks)}')
    spec, entry = {}, tasks[base]
    chain = [entry]
    while 'base' in entry:
        entry = tasks[entry['base']]
        chain.append(entry)
    for entry in reversed(chain):
        spec.update(copy.deepcopy({k: v for k, v in entry.items() if k != 'base'}))
    if traffic not in spec['traffic'] or drivers not in tasks_config['drivers']:
        raise KeyError(f'unknown traffic {traffic!r} or drivers {drivers!r} for {base}')
    spec['traffic'] = spec['traffic'][traffic]
    spec['vehicle'] = {**tasks_config['vehicle'], **spec.get('vehicle', {})}
    spec['drivers_name'], spec['drivers'] = drivers, dict(tasks_config['drivers'][drivers])
    for assignment in filter(None, assignments.split(',')):
        field, equals, value = assignment.partition('=')
        if not equals:
            raise KeyError(f'task {name!r}: override {assignment!r} is not FIELD=VALUE')
        override(spec, field.strip(), value.strip())
    return spec


def overridable(spec: dict) -> list[str]:
    """The fields a task name's '@FIELD=VALUE' may set: the vehicle's (lag, steer_gain, ...), the task's own
    numbers (v_des, time_limit, ...) and, dotted, those of its geometry, traffic and drivers."""
    number = lambda v: isinstance(v, (int, float))
    fields = list(spec['vehicle']) + [k for k, v in spec.items() if number(v) and k not in spec['vehicle']]
    for group in ('geometry', 'traffic', 'drivers'):
        fields += [f'{group}.{k}' for k, v in spec[group].items() if number(v)]
    return fields


def override(spec: dict, field: str, text: str) -> None:
    """Set one field of a resolved spec from its text (a number; true/false where the field is one), of the
    field's own type (an int field takes whole numbers only) and of its default's sign (a lag, a gain or a
    count is never negative, a comfortable deceleration never positive)."""
    if field not in overridable(spec):
        raise KeyError(f'unknown override {field!r}; known: {", ".join(overridable(spec))}')
    group, _, key = field.rpartition('.')
    target = spec[group] if group else spec['vehicle'] if field in spec['vehicle'] else spec
    old = target[key]
    if isinstance(old, bool):
        if text.lower() not in ('true', 'false'):
            raise ValueError(f'override {field}={text!r}: {field} takes true or false')
        target[key] = text.lower() == 'true'
        return
    try:
        value = int(text) if isinstance(old, int) else float(text)
    except ValueError:
        raise ValueError(f'override {field}={text!r}: {field} takes '
                         f'{"a whole number" if isinstance(old, int) else "a number"}') from None
    if not np.isfinite(value) or (value < 0 <= old) or (value > 0 > old):
        raise ValueError(f'override {field}={text!r}: {field} takes a finite number of the sign of its '
                         f'default ({old})')
    target[key] = value
