"""sim_bridge_node: the embedded driving simulator behind carla-ros-bridge's topics (role `ego_vehicle`).

Stands in for CARLA + carla-ros-bridge in synchronous mode: every `fixed_delta_seconds` of simulation
time it applies the latest carla_msgs/CarlaEgoVehicleControl, steps the task, and publishes /clock and the
bridge's topics with the bridge's types, frames and QoS. The road network goes out once as OpenDRIVE on
/carla/map and /carla/world_info (latched), the route on waypoints (latched, again after every reset).

With `wait_for_command` (carla-ros-bridge's synchronous_mode_wait_for_vehicle_control_command) each tick
waits for the command answering the frame on the wire, so a run is deterministic whatever the machine's
speed; otherwise ticks come at real-time pace (scaled by `speed`). Each episode's end is published on
/adawm/episode (adawm_msgs/EpisodeOutcome) and the task resets with the next seed.

With `wait_for_adaptation` as well, each tick also waits until the adaptation node has taken the frame and
has at most `adaptation_slack` finetuning steps (or rollback verdicts) pending, as it says on
/adawm/adaptation_progress: the node then finetunes at the same simulated times however fast the CPU is,
instead of skipping the steps it has no time for. A node that stays silent for `adaptation_timeout` is
stepped past (logged) until it reports again, so a dead adaptation node cannot freeze the simulation.
"""
from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
from adawm_msgs.msg import EpisodeOutcome
from carla_msgs.msg import (CarlaCollisionEvent, CarlaEgoVehicleControl, CarlaEgoVehicleInfo, CarlaEgoVehicleStatus,
                            CarlaStatus, CarlaWorldInfo)
from derived_object_msgs.msg import ObjectArray
from diagnostic_msgs.msg import DiagnosticStatus
from nav_msgs.msg import Odometry, Path
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.duration import Duration
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from std_msgs.msg import Float32, String

from adawm_planner.core.knobs import knob, knobs
from adawm_planner.core.opendrive import to_opendrive
from adawm_planner.nodes import convert, params, progress, qos, spin

ROUTE_ACK_TIMEOUT = 0.5   # s (wall) a new episode's first frame waits for its route to be acknowledged
OUTCOMES = {'success': EpisodeOutcome.OUTCOME_SUCCESS, 'collision': EpisodeOutcome.OUTCOME_COLLISION,
            'off_route': EpisodeOutcome.OUTCOME_OFF_ROUTE, 'timeout': EpisodeOutcome.OUTCOME_TIMEOUT}


@dataclasses.dataclass
class BridgeConfig:
    fixed_delta_seconds: float = knob(0.05, 's of simulation per tick (carla-ros-bridge: 0.05)', positive=True,
                                      high=1.0)
    seed: int = knob(0, 'seed of the first episode; +1 per episode', low=0)
    wait_for_command: bool = knob(False, 'step only when the command answering the frame on the wire arrives')
    command_timeout: float = knob(1.0, 's (wall) to wait for a command in wait_for_command mode before stepping '
                                  'anyway', positive=True)
    speed: float = knob(1.0, 'simulated seconds per wall second (without wait_for_command)', positive=True)
    max_episodes: int = knob(0, 'stop after N episodes; 0 = never', low=0)
    wait_for_adaptation: bool = knob(False, 'with wait_for_command: also step only when the adaptation node has '
                                     'taken the frame and at most adaptation_slack of its finetuning steps are pending')
    adaptation_slack: int = knob(0, 'finetuning steps the adaptation node may have pending while the simulation '
                                 'steps on; at most 1: its work queue holds one step beside the running one, a third '
                                 'would be skipped', low=0, high=1)
    adaptation_timeout: float = knob(60.0, 's (wall) the adaptation node may stay silent before the simulation '
                                     'steps without it (until it reports again)', positive=True)


class SimBridgeNode(Node):
    def __init__(self):
        super().__init__('sim_bridge_node')
        from adawm_planner.sim import default_task, make_env
        self.add_on_set_parameters_callback(self._check)
        ro = lambda text: ParameterDescriptor(description=text, read_only=True)
        try:
            self.task = self.declare_parameter('task', '', ro('task name from config/tasks.yaml, optionally with '
                                                              'fields changed (NAME@lag=0.3; docs/tasks.md); empty '
                                                              '= the default pretraining task')).value or default_task()
            self.role = self.declare_parameter('role_name', 'ego_vehicle', ro('ego role name')).value
            params.declare_knobs(self, BridgeConfig, read_only=True)
            config = params.knob_values(self, BridgeConfig)
        except params.START_ERRORS as exc:
            raise params.start_error('sim_bridge_node', exc) from None
        self.dt, self.seed, self.wait_for_command = config.fixed_delta_seconds, config.seed, config.wait_for_command
        self.command_timeout, self.speed, self.max_episodes = config.command_timeout, config.speed, config.max_episodes
        self.wait_for_adaptation, self.adaptation_slack = config.wait_for_adaptation, config.adaptation_slack
        self.adaptation_timeout = config.adaptation_timeout
        if self.wait_for_adaptation and not self.wait_for_command:
            raise SystemExit('sim_bridge_node: invalid parameter: wait_for_adaptation needs wait_for_command '
                             '(at real-time pace there is no step to hold)')

        self.env = make_env(self.task, seed=self.seed, dt=self.dt)
        self.sim = self.env.unwrapped

        ns = f'/carla/{self.role}'
        self.clock_pub = self.create_publisher(Clock, '/clock', 10)
        self.map_pub = self.create_publisher(String, '/carla/map', qos.LATCHED)
        self.world_pub = self.create_publisher(CarlaWorldInfo, '/carla/world_info', qos.LATCHED)
        self.status_pub = self.create_publisher(CarlaStatus, '/carla/status', qos.STREAM)
        self.odom_pub = self.create_publisher(Odometry, f'{ns}/odometry', qos.STREAM)
        self.objects_pub = self.create_publisher(ObjectArray, f'{ns}/objects', qos.STREAM)
        self.route_pub = self.create_publisher(Path, f'{ns}/waypoints', qos.LATCHED)
        self.vstatus_pub = self.create_publisher(CarlaEgoVehicleStatus, f'{ns}/vehicle_status', qos.STREAM)
        self.vinfo_pub = self.create_publisher(CarlaEgoVehicleInfo, f'{ns}/vehicle_info', qos.LATCHED)
        self.collision_pub = self.create_publisher(CarlaCollisionEvent, f'{ns}/collision', qos.STREAM)
        self.speed_pub = self.create_publisher(Float32, f'{ns}/speedometer', qos.STREAM)
        self.episode_pub = self.create_publisher(EpisodeOutcome, '/adawm/episode', qos.STREAM)
        self.create_subscription(CarlaEgoVehicleControl, f'{ns}/vehicle_control_cmd', self._on_control, qos.STREAM)

        self.control = CarlaEgoVehicleControl(brake=1.0)   # held until the planner speaks
        self.answered = False   # wait_for_command: the command for the frame on the wire has arrived
        # what the adaptation node last said: the newest frame it took, its pending work, when (wall)
        self.adaptation_frame, self.adaptation_pending = -1.0, 0
        self.adaptation_heard, self.stepping_past_adaptation = time.monotonic(), False
        if self.wait_for_adaptation:
            self.create_subscription(DiagnosticStatus, progress.TOPIC, self._on_progress,
                                     qos.EVENTS_IN)
        self.frame, self.sim_time = 0, 0.0
        self.episode, self.episode_seed = 0, self.seed
        self._start_episode(first=True)
        if self.wait_for_command:   # a step per command; the timer only unsticks a silent planner
            self.last_step_wall = time.monotonic()
            self.create_timer(self.command_timeout / 4, self._unstick)
        else:
            self.create_timer(self.dt / self.speed, self._tick)
        pace = ('waiting for each command' + (' and for the adaptation node' if self.wait_for_adaptation else '')
                if self.wait_for_command else 'real-time pace')
        self.get_logger().info(f'embedded simulator: task {self.task}, dt {self.dt} s, {pace}')

    @staticmethod
    def _check(parameters) -> SetParametersResult:
        from adawm_planner.sim import task_problem
        reason = params.invalid({f.name: f for f in knobs(BridgeConfig)}, parameters)
        for p in parameters:
            problem = task_problem(p.value) if p.name == 'task' and p.value else None
            if problem:
                reason = f'task: {problem}'
            if p.name == 'fixed_delta_seconds' and not reason and abs(round(1 / p.value) * p.value - 1) > 1e-9:
                reason = f'fixed_delta_seconds must divide one second, got {p.value}'
        return SetParametersResult(successful=reason is None, reason=reason or '')

    # ---- episodes ----------------------------------------------------------------------------------
    def _start_episode(self, first=False) -> None:
        if not first:   # a reset takes a tick: no two different states ever share a time stamp
            self.frame += 1
            self.sim_time = self.frame * self.dt
        self.obs, _ = self.env.reset(seed=self.episode_seed)
        self.episode_return, self.episode_steps, self.min_ttc = 0.0, 0, float('inf')
        scene = self.sim.scene()
        if first:
            xodr = to_opendrive(scene.lanes, name=self.task)
            self.map_pub.publish(String(data=xodr))
            self.world_pub.publish(CarlaWorldInfo(map_name=self.task, opendrive=xodr))
            self.vinfo_pub.publish(CarlaEgoVehicleInfo(id=1, type='vehicle.adawm.embedded', rolename=self.role,
                                                       mass=1500.0))
        self.route_pub.publish(convert.route_msg(scene.route, self.sim_time))
        # The new route and the episode's first frame travel on different topics, which DDS does not order:
        # a planner could take that frame with the old route. Let the route arrive first (bounded wait).
        self.route_pub.wait_for_all_acked(Duration(seconds=ROUTE_ACK_TIMEOUT))
        self._publish_state(scene, collided=False)

    def _end_episode(self, info) -> None:
        outcome = next((code for key, code in OUTCOMES.items() if info.get(key)), EpisodeOutcome.OUTCOME_TIMEOUT)
        msg = EpisodeOutcome(task=self.task, episode=self.episode, seed=self.episode_seed, outcome=outcome,
                             steps=self.episode_steps, duration=float(self.episode_steps * self.dt),
                             episode_return=float(self.episode_return),
                             route_completion=float(info.get('route_completion', 0.0)),
                             min_ttc=float(min(self.min_ttc, 1e3)))
        msg.header.stamp = convert.time_msg(self.sim_time)
        self.episode_pub.publish(msg)
        name = {v: k for k, v in OUTCOMES.items()}.get(outcome, 'timeout')
        self.get_logger().info(f'episode {self.episode} (seed {self.episode_seed}): {name}, '
                               f'{self.episode_steps} steps, return {self.episode_return:.1f}')
        self.episode += 1
        self.episode_seed += 1
        if self.max_episodes and self.episode >= self.max_episodes:
            raise SystemExit(0)
        self._start_episode()

    # ---- ticks -------------------------------------------------------------------------------------
    def _on_control(self, msg: CarlaEgoVehicleControl) -> None:
        values = (msg.throttle, msg.steer, msg.brake)
        if not all(math.isfinite(v) for v in values):
            self.get_logger().warning(f'ignoring a control with non-finite values {values}', throttle_duration_sec=5)
            return
        self.control = msg
        # Only a command for the frame on the wire steps: one answering an earlier frame (stamped, but before
        # it) would put two frames in flight for good, and a planner would then skip frames now and then.
        # Unstamped commands (stamp 0, e.g. a manual controller) step as in carla-ros-bridge.
        stamp = convert.stamp_seconds(msg.header.stamp)
        answers_an_earlier_frame = 0.0 < stamp < self.sim_time - 1e-6
        if self.wait_for_command and not answers_an_earlier_frame:
            self.answered = True
            self._step_if_ready()

    def _on_progress(self, msg: DiagnosticStatus) -> None:
        try:
            self.adaptation_frame, self.adaptation_pending = progress.progress_of_msg(msg)
        except ValueError as exc:
            self.get_logger().warning(f'ignoring it: {exc}', throttle_duration_sec=10)
            return
        self.adaptation_heard = time.monotonic()
        if self.stepping_past_adaptation:
            self.stepping_past_adaptation = False
            self.get_logger().info('the adaptation node reports again: waiting for it again')
        self._step_if_ready()

    def _adaptation_caught_up(self) -> bool:
        return (self.stepping_past_adaptation or not self.wait_for_adaptation or
                (self.adaptation_frame >= self.sim_time - 1e-6 and self.adaptation_pending <= self.adaptation_slack))

    def _step_if_ready(self) -> None:
        if self.answered and self._adaptation_caught_up():
            self._tick()

    def _unstick(self) -> None:
        now = time.monotonic()
        if not self.answered:
            if now - self.last_step_wall > self.command_timeout:
                self.get_logger().warning(f'no command for {self.command_timeout} s: stepping with the last one',
                                          throttle_duration_sec=10)
                self._tick()
            return
        if self._adaptation_caught_up():
            return
        silent = now - self.adaptation_heard
        if silent > self.adaptation_timeout:
            self.stepping_past_adaptation = True
            self.get_logger().warning(
                f'the adaptation node has been silent for {silent:.0f} s (last: frame {self.adaptation_frame:.2f} s, '
                f'{self.adaptation_pending} pending): stepping without it until it reports again')
            self._tick()
        elif self.adaptation_pending <= self.adaptation_slack and now - self.last_step_wall > self.command_timeout:
            # nothing pending, yet the frame not taken: lost on the way (best effort), or the node still starting
            self.get_logger().warning(f'the adaptation node did not take frame {self.sim_time:.2f} s within '
                                      f'{self.command_timeout} s: stepping on', throttle_duration_sec=10)
            self._tick()

    def _tick(self) -> None:
        self.last_step_wall = time.monotonic()
        self.answered = False
        c = self.control
        self.obs, reward, terminated, truncated, info = self.sim.step_control(
            float(np.clip(c.throttle, 0, 1)), float(np.clip(c.steer, -1, 1)), float(np.clip(c.brake, 0, 1)))
        self.frame += 1
        self.sim_time = self.frame * self.dt   # from the frame count, so no rounding error accumulates
        self.episode_steps += 1
        self.episode_return += float(reward)
        self.min_ttc = min(self.min_ttc, float(info.get('ttc', float('inf'))))
        self._publish_state(self.sim.scene(), collided=bool(info.get('collision')))
        if terminated or truncated:
            self._end_episode(info)

    def _publish_state(self, scene, collided: bool) -> None:
        stamp = convert.time_msg(self.sim_time)
        self.clock_pub.publish(Clock(clock=stamp))
        self.status_pub.publish(CarlaStatus(frame=self.frame, fixed_delta_seconds=float(self.dt),
                                            synchronous_mode=True, synchronous_mode_running=True))
        ego = scene.ego
        self.objects_pub.publish(convert.objects_msg(scene.agents, self.sim_time))
        self.speed_pub.publish(Float32(data=float(ego.speed)))
        status = CarlaEgoVehicleStatus(velocity=float(ego.speed), orientation=convert.quaternion_from_yaw(ego.yaw),
                                       control=self.control)
        status.header.stamp, status.header.frame_id = stamp, 'map'
        status.acceleration.linear.x = float(ego.acceleration)
        self.vstatus_pub.publish(status)
        self.odom_pub.publish(convert.odometry_msg(ego, self.sim_time, self.role))   # last: completes the frame
        if collided:
            event = CarlaCollisionEvent(other_actor_id=0)
            event.header.stamp, event.header.frame_id = stamp, self.role
            self.collision_pub.publish(event)


def main(args=None) -> None:
    spin(SimBridgeNode, args=args)


if __name__ == '__main__':
    main()
