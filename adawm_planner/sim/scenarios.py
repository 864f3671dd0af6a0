"""highway-env scenarios behind the tasks: road geometry, traffic, the ego vehicle and its route.

Every scenario is a highway-env env subclass that is only used for its road and its vehicles: our env
(sim/envs.py) sets the ego's control, advances the physics with `advance()` and computes observation,
reward and termination itself from a Scene. highway-env's own observation, reward and termination are
switched off here — that also removes its reward bug with continuous actions on roundabout / merge.
All coordinates here are in highway-env's y-down frame; sim/scene_source.py converts to the map frame.
"""
from __future__ import annotations

import numpy as np
from gymnasium import spaces
from highway_env import utils
from highway_env.envs.common.observation import ObservationType
from highway_env.envs.highway_env import HighwayEnv
from highway_env.envs.intersection_env import IntersectionEnv
from highway_env.envs.merge_env import MergeGenericEnv
from highway_env.envs.roundabout_env import RoundaboutGenericEnv
from highway_env.road.lane import CircularLane, LineType, StraightLane
from highway_env.road.regulation import RegulatedRoad
from highway_env.road.road import Road, RoadNetwork
from highway_env.vehicle.behavior import IDMVehicle
from highway_env.vehicle.controller import ControlledVehicle, MDPVehicle
from highway_env.vehicle.kinematics import Vehicle

ROUTE_SPACING = 2.0   # m between route waypoints


# ---- vehicles -----------------------------------------------------------------------------------------
class EgoVehicle(Vehicle):
    """highway-env's kinematic bicycle, but braking stops the car instead of reversing it (as in CARLA)."""

    def step(self, dt: float) -> None:
        self.action['acceleration'] = max(float(self.action['acceleration']), -self.speed / dt)
        super().step(dt)

    def predict_trajectory_constant_speed(self, times):
        """Straight-line extrapolation (highway-env's deep-copies the vehicle and with it the whole road)."""
        return [self.position + self.velocity * t for t in times], [self.heading] * len(times)


class FixedDriver(IDMVehicle):
    """IDM + MOBIL with parameters fixed by a driver preset (never re-sampled), so a preset really changes
    behaviour. `PRESET` is set per scenario instance; target speeds are scaled by its speed_factor."""
    PRESET = {'time_wanted': 1.5, 'distance_wanted': 5.0, 'comfort_acc_max': 3.0, 'comfort_acc_min': -5.0,
              'politeness': 0.5, 'speed_factor': 1.0, 'yields': True}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        p = self.PRESET
        self.TIME_WANTED, self.DISTANCE_WANTED = p['time_wanted'], p['distance_wanted'] + self.LENGTH
        self.COMFORT_ACC_MAX, self.COMFORT_ACC_MIN = p['comfort_acc_max'], p['comfort_acc_min']
        self.POLITENESS = p['politeness']

    @property
    def target_speed(self):
        return self._target_speed

    @target_speed.setter
    def target_speed(self, value):   # every setter (spawn, un-yielding at a junction) gets the preset's factor
        if value == 0 and not self.PRESET['yields'] and hasattr(self, '_target_speed'):
            return   # RegulatedRoad makes a car give way by setting its target speed to 0: this one doesn't
        self._target_speed = value * self.PRESET['speed_factor']

    def randomize_behavior(self):
        pass


def driver_class(name: str, preset: dict) -> str:
    """A FixedDriver subclass for a named preset, made importable by path (highway-env's spawners look the
    class up from config['other_vehicles_type']). Returns that path."""
    class_name = 'Driver_' + name
    existing = globals().get(class_name)
    if existing is None or existing.PRESET != preset:
        globals()[class_name] = type(class_name, (FixedDriver,), {'PRESET': dict(preset)})
    return f'{__name__}.{class_name}'


# ---- common plumbing ----------------------------------------------------------------------------------
class _NoObservation(ObservationType):
    def space(self):
        return spaces.Box(0, 1, (0,), np.float32)

    def observe(self):
        return np.zeros(0, np.float32)


class ScenarioMixin:
    """Turns a highway-env env into a physics + traffic engine driven from outside.

    config['task'] (from config/tasks.yaml) holds the geometry, traffic and start parameters."""

    @property
    def task(self) -> dict:
        return self.config['task']

    @property
    def drivers(self) -> type:
        return utils.class_from_path(self.config['other_vehicles_type'])

    def define_spaces(self):
        super().define_spaces()
        self.observation_type = _NoObservation(self)
        self.observation_space = self.observation_type.space()

    def _reward(self, action):
        return 0.0

    def _rewards(self, action):
        return {}

    def _is_terminated(self):
        return False

    def _is_truncated(self):
        return False

    def _info(self, obs, action):
        return {}

    def advance(self, acceleration: float, steering: float) -> None:
        """One physics step of 1/simulation_frequency seconds with the ego's acceleration / steering angle."""
        self.vehicle.action = {'acceleration': acceleration, 'steering': steering}
        self.road.act()   # the ego's act() keeps the action it has
        self.road.step(1 / self.config['simulation_frequency'])
        self.steps += 1
        self.time += 1 / self.config['simulation_frequency']

    def _place_ego(self, lane_index, longitudinal, speed) -> EgoVehicle:
        lane = self.road.network.get_lane(lane_index)
        ego = EgoVehicle(self.road, lane.position(longitudinal, 0.0), lane.heading_at(longitudinal), speed)
        self.road.vehicles.append(ego)
        self.controlled_vehicles = [ego]
        return ego

    def _clear_around(self, radius: float) -> None:
        """Remove other vehicles spawned too close to the ego (no collision at t=0)."""
        self.road.vehicles = [v for v in self.road.vehicles if v is self.vehicle
                              or np.linalg.norm(v.position - self.vehicle.position) >= radius]

    def route_points(self) -> np.ndarray:
        raise NotImplementedError


def sample_lane(lane, start: float, end: float, lateral=lambda s: 0.0) -> np.ndarray:
    s = np.arange(start, end, ROUTE_SPACING)
    return np.array([lane.position(t, lateral(t)) for t in s]).reshape(-1, 2)


def smoothstep(s, s0, s1):
    t = np.clip((s - s0) / (s1 - s0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def route_through(network, lane_indices, start: float, end: float) -> np.ndarray:
    """Waypoints along consecutive lanes, from `start` on the first to `end` on the last."""
    pieces = []
    for i, index in enumerate(lane_indices):
        lane = network.get_lane(index)
        lo = start if i == 0 else 0.0
        hi = end if i == len(lane_indices) - 1 else lane.length
        pieces.append(sample_lane(lane, lo, hi))
    return np.concatenate(pieces)


class NearbyRegulatedRoad(RegulatedRoad):
    """highway-env's priority rules, only checked between vehicles that are close enough to meet within
    the 3 s conflict horizon (its all-pairs check dominated the step time in dense traffic)."""

    def enforce_road_rules(self):
        vehicles = self.vehicles
        for v in vehicles:   # release cars whose yield time is over
            if getattr(v, 'is_yielding', False):
                if v.yield_timer >= self.YIELD_DURATION * self.REGULATION_FREQUENCY:
                    v.target_speed, v.is_yielding = v.lane.speed_limit, False
                    v.__dict__.pop('color', None)
                else:
                    v.yield_timer += 1
        for i, v1 in enumerate(vehicles[:-1]):
            for v2 in vehicles[i + 1:]:
                reach = 3.0 * (v1.speed + v2.speed) + v1.LENGTH
                if np.linalg.norm(v1.position - v2.position) > reach or not self.is_conflict_possible(v1, v2):
                    continue
                yielding = self.respect_priorities(v1, v2)
                if isinstance(yielding, ControlledVehicle) and not isinstance(yielding, MDPVehicle):
                    yielding.color = self.YIELDING_COLOR
                    yielding.target_speed = 0
                    yielding.is_yielding = True
                    yielding.yield_timer = 0


# ---- intersection: right / left turn -----------------------------------------------------------------
class Intersection(ScenarioMixin, IntersectionEnv):
    """A four-way junction of single-lane roads with a configurable lane width and corner radius.
    Node names follow highway-env's (o: outer, ir: inner incoming, il: inner outgoing; 0 south, 1 west,
    2 north, 3 east) so its traffic spawner and clean-up work unchanged."""

    def _make_road(self):
        g = self.task['geometry']
        w, radius, access = g['lane_width'], g['corner_radius'], g['access_length']
        outer = radius + w / 2            # half size of the junction box
        left_radius = radius + w
        n, c, s = LineType.NONE, LineType.CONTINUOUS, LineType.STRIPED
        net = RoadNetwork()
        for corner in range(4):
            angle = np.radians(90 * corner)
            rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
            priority = 3 if corner % 2 else 1
            kw = {'priority': priority, 'speed_limit': 10.0}
            net.add_lane(f'o{corner}', f'ir{corner}',
                         StraightLane(rot @ [w / 2, access + outer], rot @ [w / 2, outer], line_types=[s, c], **kw))
            net.add_lane(f'ir{corner}', f'il{(corner - 1) % 4}',
                         CircularLane(rot @ [outer, outer], radius, angle + np.pi, angle + 1.5 * np.pi,
                                      line_types=[n, c], **kw))
            net.add_lane(f'ir{corner}', f'il{(corner + 1) % 4}',
                         CircularLane(rot @ [-left_radius + w / 2, left_radius - w / 2], left_radius, angle,
                                      angle - 0.5 * np.pi, clockwise=False, line_types=[n, n],
                                      priority=priority - 1, speed_limit=10.0))
            net.add_lane(f'ir{corner}', f'il{(corner + 2) % 4}',
                         StraightLane(rot @ [w / 2, outer], rot @ [w / 2, -outer], line_types=[s, n], **kw))
            net.add_lane(f'il{(corner - 1) % 4}', f'o{(corner - 1) % 4}',
                         StraightLane(rot @ [outer, w / 2], rot @ [access + outer, w / 2], line_types=[n, c], **kw))
        self.road = NearbyRegulatedRoad(network=net, np_random=self.np_random)

    def _make_vehicles(self, n_vehicles=None):   # count comes from the traffic preset instead
        t = self.task
        for longitudinal in np.linspace(0, 80, t['traffic']['initial_vehicle_count']):
            self._spawn_vehicle(longitudinal, spawn_probability=1.0)
        for _ in range(2 * self.config['simulation_frequency']):   # 2 s warm-up: traffic reaches the junction
            self.road.act()
            self.road.step(1 / self.config['simulation_frequency'])
        self.vehicle = self._place_ego(('o0', 'ir0', 0), t['start'], t['start_speed'])
        self._clear_around(15.0)
        # a list of exits: one drawn per episode, after the traffic, so the traffic of a seed is unchanged
        exits = t['destination']
        self.destination = exits if isinstance(exits, str) else str(self.np_random.choice(exits))

    def step_traffic(self):
        self._clear_vehicles()
        self._spawn_vehicle(spawn_probability=self.task['traffic']['spawn_probability'])

    def route_points(self):
        net = self.road.network
        destination = self.destination
        exit_node = 'il' + destination[1:]
        return route_through(net, [('o0', 'ir0', 0), ('ir0', exit_node, 0), (exit_node, destination, 0)],
                             self.task['start'], self.task['exit_length'])


# ---- roundabout ---------------------------------------------------------------------------------------
class Roundabout(ScenarioMixin, RoundaboutGenericEnv):
    """highway-env's generic roundabout (radius, lanes, vehicle count configurable); ego enters from the
    south and leaves at the configured exit."""

    def _make_vehicles(self):
        super()._make_vehicles()
        self.road.vehicles.remove(self.vehicle)
        lane = self.road.network.get_lane(('ser', 'ses', 0))
        self.vehicle = self._place_ego(('ser', 'ses', 0), lane.length - self.task['start'], self.task['start_speed'])
        self._clear_around(12.0)

    def step_traffic(self):
        pass

    def route_points(self):
        net = self.road.network
        nodes = net.shortest_path('ser', self.task['destination'])
        lanes = [(a, b, 0) for a, b in zip(nodes[:-1], nodes[1:])]
        first = net.get_lane(lanes[0])
        return route_through(net, lanes, first.length - self.task['start'], self.task['exit_length'])


# ---- lane merge ---------------------------------------------------------------------------------------
class Merge(ScenarioMixin, MergeGenericEnv):
    """Ego on the on-ramp of a straight multi-lane road, merging into the rightmost lane."""

    def _make_vehicles(self):
        t, cfg = self.task, self.config
        lanes = cfg['lanes_count']
        end = cfg['before_merge_length'] + cfg['converge_merge_length'] + cfg['parallel_merge_length']
        self.vehicle = self._place_ego(('j', 'k', 0), t['start'], t['start_speed'])
        traffic = t['traffic']
        for _ in range(traffic['vehicles_count']):
            for _ in range(10):
                lane_id = int(self.np_random.integers(lanes))
                x = float(self.np_random.uniform(0, end))
                position = self.road.network.get_lane(('a', 'b', lane_id)).position(x, 0.0)
                if all(np.linalg.norm(v.position - position) > traffic['gap'] for v in self.road.vehicles):
                    speed = traffic['speed'] + self.np_random.uniform(-1.0, 1.0)
                    self.road.vehicles.append(self.drivers(self.road, position, speed=speed))
                    break
        self._clear_around(10.0)

    def step_traffic(self):
        pass

    def route_points(self):
        t, cfg, net = self.task, self.config, self.road.network
        main = cfg['lanes_count'] - 1
        ramp = net.get_lane(('j', 'k', 0))
        parallel = net.get_lane(('b', 'c', cfg['lanes_count']))
        shift = lambda s: -StraightLane.DEFAULT_WIDTH * smoothstep(s, t['merge_at'], t['merge_at'] + 25.0)
        return np.concatenate([sample_lane(ramp, t['start'], ramp.length),
                               sample_lane(net.get_lane(('k', 'b', 0)), 0.0, net.get_lane(('k', 'b', 0)).length),
                               sample_lane(parallel, 0.0, parallel.length, shift),
                               sample_lane(net.get_lane(('c', 'd', main)), 0.0, t['exit_length'])])


# ---- highway overtake ---------------------------------------------------------------------------------
class Overtake(ScenarioMixin, HighwayEnv):
    """A straight three-lane road; a slow car ahead of the ego in the middle lane, traffic on the others.
    The route passes it on the left lane and comes back."""

    def _reset(self):
        self._make_road()
        self._make_vehicles()

    def _make_road(self):
        net = RoadNetwork.straight_road_network(3, 0.0, self.task['geometry']['road_length'], speed_limit=30)
        self.road = Road(network=net, np_random=self.np_random)

    def _make_vehicles(self):
        t, traffic = self.task, self.task['traffic']
        self.vehicle = self._place_ego(('0', '1', 1), t['start'], t['start_speed'])
        slow = self.drivers.make_on_lane(self.road, ('0', '1', 1), t['start'] + t['slow_gap'], speed=t['slow_speed'])
        slow.enable_lane_change = False
        slow.target_speed = t['slow_speed'] / slow.PRESET['speed_factor']   # the obstacle car stays slow
        self.road.vehicles.append(slow)
        for _ in range(traffic['vehicles_count']):
            for _ in range(10):
                lane_id = int(self.np_random.choice([0, 0, 1, 2]))
                x = float(self.np_random.uniform(0, t['geometry']['road_length'] - 150))
                position = self.road.network.get_lane(('0', '1', lane_id)).position(x, 0.0)
                if all(np.linalg.norm(v.position - position) > traffic['gap'] for v in self.road.vehicles):
                    speed = traffic['speed'] + self.np_random.uniform(-1.0, 1.0)
                    self.road.vehicles.append(self.drivers(self.road, position, speed=speed))
                    break
        self._clear_around(12.0)

    def step_traffic(self):
        pass

    def route_points(self):
        t = self.task
        lane = self.road.network.get_lane(('0', '1', 1))
        a, b = t['start'] + t['pass_at'], t['start'] + t['return_at']
        width = StraightLane.DEFAULT_WIDTH
        shift = lambda s: -width * (smoothstep(s, a, a + 20.0) - smoothstep(s, b, b + 20.0))
        return sample_lane(lane, t['start'], t['start'] + t['route_length'], shift)


SCENARIOS = {'intersection': Intersection, 'roundabout': Roundabout, 'merge': Merge, 'overtake': Overtake}
