"""planner_node: carla-ros-bridge topics in, carla_msgs/CarlaEgoVehicleControl out, planned with the world model.

The node works frame by frame: when odometry and objects of the same simulation time have arrived, it
builds the Scene, turns it into the same observation the model was trained on, and — every `model_period`
seconds of simulation time, the step period the model was trained with — filters the latent state and
plans; on the frames between decisions it repeats the last command. A watchdog on the wall clock (`rate`
Hz) commands a safe stop (throttle 0, brake 1) whenever the inputs cannot be trusted — missing, stale,
not finite, time running backwards — says why on /diagnostics, and the node resumes by itself.

LoRA adapters arrive as parameters (adapter.<model|policy>.data: the safetensors bytes, with .sha256 and
.version beside them, or .path naming a file inside `adapter_dir`). The on_set_parameters callback checks
them completely, builds the adapted module off to the side, and the next frame swaps it in before
planning, never mid-plan. A rejected adapter comes back with its reason and leaves the running one.
"""
from __future__ import annotations

import collections
import gc
import threading
import time

import numpy as np
import rclpy
import torch
from adawm_msgs.msg import AdapterStatus
from carla_msgs.msg import CarlaEgoVehicleControl
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point
from rcl_interfaces.msg import ParameterDescriptor, ParameterType, SetParametersResult
from rclpy.node import Node
from sensor_msgs.msg import Image
from visualization_msgs.msg import Marker, MarkerArray

from adawm_planner.core import lora
from adawm_planner.core.bev import to_rgb
from adawm_planner.core.checkpoint import CheckpointError, load_checkpoint
from adawm_planner.nodes import convert, qos, spin

SAFE_STOP = dict(throttle=0.0, steer=0.0, brake=1.0)
NEUTRAL = dict(throttle=0.0, steer=0.0, brake=0.0)


class PlannerNode(Node):
    def __init__(self):
        super().__init__('planner_node')
        torch.set_num_threads(1)   # one core for the planner; the adaptation node gets the other
        p = self.declare_parameter
        self.checkpoint_dir = p('checkpoint', '', ParameterDescriptor(
            description='pretrained checkpoint directory; empty = the shipped one', read_only=True)).value \
            or convert.default_checkpoint()
        self.role = p('role_name', 'ego_vehicle', ParameterDescriptor(read_only=True)).value
        self.mode = p('mode', 'plan', ParameterDescriptor(description="'plan' (imagination) or 'actor'")).value
        self.rate = p('rate', 20.0, ParameterDescriptor(description='watchdog checks per second (wall clock)',
                                                        read_only=True)).value
        self.model_period = p('model_period', 0.1,
                              ParameterDescriptor(description='s of sim time between decisions')).value
        self.input_timeout = p('input_timeout', 0.5, ParameterDescriptor(
            description='s (wall) without a new frame before the inputs count as stale')).value
        self.candidates = p('candidates', 0, ParameterDescriptor(description='K; 0 = the preset\'s')).value
        self.horizon = p('horizon', 0, ParameterDescriptor(description='H; 0 = the preset\'s')).value
        self.adapter_dir = p('adapter_dir', '', ParameterDescriptor(description='where .path adapters may live')).value
        key_file = p('adapter_key_file', '', ParameterDescriptor(
            description='file holding an HMAC-SHA256 key; when set, adapters must carry a valid '
                        'adapter.<target>.signature', read_only=True)).value
        self.image_every = p('image_every', 4, ParameterDescriptor(
            description='publish the decoded BEV every N decisions; 0 = never')).value
        for target in lora.TARGETS:
            p(f'adapter.{target}.data', [],   # rclpy spells a byte array as a list of 1-byte bytes
              ParameterDescriptor(type=ParameterType.PARAMETER_BYTE_ARRAY, description='safetensors bytes'))
            p(f'adapter.{target}.sha256', '')
            p(f'adapter.{target}.version', 0)
            p(f'adapter.{target}.signature', '')
            p(f'adapter.{target}.path', '')

        try:
            self.agent, self.meta = load_checkpoint(self.checkpoint_dir)
        except CheckpointError as exc:
            raise SystemExit(f'planner_node: cannot load checkpoint: {exc}') from None
        self.agent.eval()
        preset = self.agent.preset
        self.agent.preset = preset.replace(plan_candidates=self.candidates or preset.plan_candidates,
                                           plan_horizon=self.horizon or preset.plan_horizon)
        key = convert.read_key(key_file)
        self.slots = {'model': lora.AdapterSlot(self.agent.world_model, 'model', key),
                      'policy': lora.AdapterSlot(self.agent.actor_critic, 'policy', key)}
        self.pending: dict[str, tuple] = {}
        self.pending_lock = threading.Lock()
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self.inputs = convert.InputState()
        self.observer = convert.Observer(self.agent.world_model.bev_shape[0])
        self.actions = convert.ActionTable(self.meta['task'])
        self.driver_state, self.last_decision_bin, self.command = None, None, dict(SAFE_STOP)
        self.route_in_use = None
        self.safe_stop_reason = 'waiting for inputs'
        self.latencies = collections.deque(maxlen=2000)
        self.frames = self.decisions = self.missed = 0
        self.last_frame_stamp, self.frame_period = None, None

        ns = f'/carla/{self.role}'
        convert.subscribe_inputs(self, self.inputs, self.role, self._on_input)
        self.control_pub = self.create_publisher(CarlaEgoVehicleControl, f'{ns}/vehicle_control_cmd', qos.STREAM)
        self.marker_pub = self.create_publisher(MarkerArray, '/adawm/imagined_trajectories', 1)
        self.image_pub = self.create_publisher(Image, '/adawm/decoded_bev', 1)
        self.diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.status_pub = self.create_publisher(AdapterStatus, '/adawm/adapter_status', 10)
        steady = rclpy.clock.Clock(clock_type=rclpy.clock.ClockType.STEADY_TIME)
        self.create_timer(1.0 / self.rate, self._watchdog, clock=steady)
        self.create_timer(1.0, self._publish_diagnostics, clock=steady)
        # One decision on a blank observation before the first frame: torch's first calls are slow.
        spec = self.meta['spec']
        blank = {'bev': np.zeros(spec['bev_shape'], np.uint8), 'ego': np.zeros(spec['ego_dim'], np.float32)}
        self.agent.act(blank, None, self.mode)
        # The model and message types stay for the node's life: keep them out of the cyclic GC's scans,
        # whose full passes otherwise land as latency spikes on planning ticks.
        gc.collect()
        gc.freeze()
        self.get_logger().info(f'planning with {self.checkpoint_dir} (preset {preset.name}, mode {self.mode}, '
                               f'K={self.agent.preset.plan_candidates}, H={self.agent.preset.plan_horizon})')

    # ---- adapters over the parameter service ----------------------------------------------------------
    def _on_set_parameters(self, params) -> SetParametersResult:
        given = {p.name: p.value for p in params}
        for name, value in given.items():
            if name in ('mode',) and value not in ('plan', 'actor'):
                return SetParametersResult(successful=False, reason=f"mode must be 'plan' or 'actor', got {value!r}")
            if name in ('model_period', 'input_timeout') and not (isinstance(value, float) and value > 0):
                return SetParametersResult(successful=False, reason=f'{name} must be a positive float')
        for target, slot in self.slots.items():
            prefix = f'adapter.{target}.'
            if not any(n.startswith(prefix) for n in given):
                continue
            value = lambda field: given.get(prefix + field, self.get_parameter(prefix + field).value)
            if not (given.get(prefix + 'data') or given.get(prefix + 'path')):
                return SetParametersResult(successful=False, reason=(
                    f'set {prefix}data (or {prefix}path) together with {prefix}sha256 and {prefix}version '
                    'in one set_parameters_atomically call'))
            try:
                if given.get(prefix + 'path'):
                    blob = slot.read_file(given[prefix + 'path'], self.adapter_dir or '/nonexistent-adapter-dir')
                else:
                    blob = b''.join(value('data'))
                module, adapter = slot.prepare(blob, value('sha256'), int(value('version')),
                                               value('signature') or None)
            except lora.AdapterError as exc:
                reason = f'{target} adapter rejected: {exc}'
                self.get_logger().warning(reason)
                self._status(target, int(value('version') or 0), AdapterStatus.STATE_REJECTED, reason)
                return SetParametersResult(successful=False, reason=reason)
            with self.pending_lock:
                self.pending[target] = (module, adapter)
        for name in ('mode', 'model_period', 'input_timeout'):
            if name in given:
                setattr(self, name, given[name])
        return SetParametersResult(successful=True)

    def _swap_pending(self) -> None:
        with self.pending_lock:
            pending, self.pending = self.pending, {}
        for target, (module, adapter) in pending.items():
            started = time.perf_counter()
            if target == 'model':
                self.agent.world_model = module
            else:
                self.agent.actor_critic = module
            self.slots[target].applied(adapter)
            self._status(target, adapter.meta.version, AdapterStatus.STATE_APPLIED, '', adapter)
            self.get_logger().info(f'{target} adapter v{adapter.meta.version} applied '
                                   f'({1000 * (time.perf_counter() - started):.2f} ms swap)')

    def _status(self, target, version, state, reason, adapter=None):
        msg = AdapterStatus(version=version, target=AdapterStatus.TARGET_MODEL if target == 'model'
                            else AdapterStatus.TARGET_POLICY, state=state, reason=reason)
        msg.header.stamp = self.get_clock().now().to_msg()
        if adapter is not None:
            msg.rank, msg.trainable_parameters, msg.sha256 = adapter.meta.rank, adapter.parameter_count, adapter.sha256
        self.status_pub.publish(msg)

    # ---- frames ---------------------------------------------------------------------------------------
    def _on_input(self, store, msg) -> None:
        store(msg)
        started = time.monotonic()
        stamp = self.inputs.frame(started)
        if stamp is None:
            return
        try:
            self._swap_pending()
            reason = self.inputs.problem(started, self.input_timeout)
            if reason is not None:
                self._safe_stop(reason, stamp)
            else:
                if self.safe_stop_reason:
                    self.get_logger().info(f'inputs sane again; planning resumes ({self.safe_stop_reason})')
                self.safe_stop_reason = ''
                # decisions on a fixed grid of simulation time (the first frame of each model period), so a
                # replayed drive is decided on the same frames as the live one
                decision_bin = int(stamp / self.model_period + 1e-6)
                if decision_bin != self.last_decision_bin:
                    self._decide(stamp, decision_bin)
                self._publish_control(self.command, stamp)
        except Exception as exc:   # a fault never kills the node: stop safely and say why
            self.get_logger().error(f'planning failed: {exc!r}')
            self._safe_stop(f'planning failed: {exc!r}', stamp)
        self._count_frame(stamp, time.monotonic() - started)

    def _count_frame(self, stamp: float, latency: float) -> None:
        if self.last_frame_stamp is not None and stamp > self.last_frame_stamp:
            gap = stamp - self.last_frame_stamp
            self.frame_period = gap if self.frame_period is None else min(self.frame_period, gap)
            self.missed += max(0, round(gap / self.frame_period) - 1)   # frames that came and went unanswered
        self.last_frame_stamp = stamp
        self.latencies.append(latency)
        self.frames += 1

    def _watchdog(self) -> None:
        reason = self.inputs.problem(time.monotonic(), self.input_timeout)
        if reason is not None:
            self._safe_stop(reason)

    def _decide(self, stamp: float, decision_bin: int) -> None:
        scene = self.inputs.scene()
        if scene.route is not self.route_in_use:   # a new route is a new episode: the latent starts over
            self.route_in_use, self.driver_state = scene.route, None
        if self.driver_state is None:
            # the sampling noise of an episode depends on nothing but its start time: reproducible on replay
            self.agent.generator.manual_seed(decision_bin)
            self.command = dict(NEUTRAL)   # an episode's first observation carries no control, as in training
        obs = self.observer.observe(scene, self.command)
        action, self.driver_state, info = self.agent.act(obs, self.driver_state, self.mode)
        self.command = self.actions.control(action)
        self.last_decision_bin = decision_bin
        self.decisions += 1
        if info:
            self._publish_plan(scene, info)
        if self.image_every and self.decisions % self.image_every == 0:
            self._publish_decoded_bev()

    def _safe_stop(self, reason: str, frame_stamp: float | None = None) -> None:
        if reason != self.safe_stop_reason:
            self.get_logger().warning(f'safe stop: {reason}')
        self.safe_stop_reason = reason
        self.driver_state, self.last_decision_bin, self.command = None, None, dict(SAFE_STOP)
        self.observer.reset()
        self._publish_control(self.command, frame_stamp)

    def _publish_control(self, command: dict, frame_stamp: float | None = None) -> None:
        """A command answering a frame carries that frame's time; a watchdog stop carries the clock's."""
        msg = CarlaEgoVehicleControl(throttle=float(command['throttle']), steer=float(command['steer']),
                                     brake=float(command['brake']))
        msg.header.stamp = (rclpy.time.Time(nanoseconds=round(frame_stamp * 1e9)).to_msg() if frame_stamp is not None
                            else self.get_clock().now().to_msg())
        self.control_pub.publish(msg)

    def _publish_plan(self, scene, info) -> None:
        if self.marker_pub.get_subscription_count() == 0:
            return
        paths = self.actions.paths(scene.ego, info['actions'].argmax(-1).numpy(), self.model_period)
        markers = MarkerArray()
        stamp = self.get_clock().now().to_msg()
        for i, path in enumerate(paths):
            m = Marker(ns='adawm_candidates', id=i, type=Marker.LINE_STRIP, action=Marker.ADD)
            m.header.frame_id, m.header.stamp = 'map', stamp
            best = i == info['best']
            m.scale.x = 0.3 if best else 0.08
            m.color.r, m.color.g, m.color.b, m.color.a = (0.1, 0.9, 0.2, 1.0) if best else (0.6, 0.6, 0.9, 0.35)
            m.points = [Point(x=float(x), y=float(y), z=0.2) for x, y in path]
            markers.markers.append(m)
        self.marker_pub.publish(markers)

    def _publish_decoded_bev(self) -> None:
        if self.image_pub.get_subscription_count() == 0 or self.driver_state is None:
            return
        with torch.inference_mode():
            feat = self.agent.world_model.feat(self.driver_state['latent'])
            bev = (self.agent.world_model.bev_decoder(feat)[0].clamp(0, 1) * 255).to(torch.uint8).numpy()
        rgb = to_rgb(bev)
        msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding='rgb8', step=rgb.shape[1] * 3,
                    data=rgb.tobytes())
        msg.header.stamp, msg.header.frame_id = self.get_clock().now().to_msg(), f'{self.role}'
        self.image_pub.publish(msg)

    def _publish_diagnostics(self) -> None:
        lat = np.array(self.latencies) * 1000 if self.latencies else np.zeros(1)
        now = self.get_clock().now()
        status = DiagnosticStatus(name='adawm/planner', hardware_id=self.role)
        status.level = DiagnosticStatus.WARN if self.safe_stop_reason else DiagnosticStatus.OK
        status.message = f'safe stop: {self.safe_stop_reason}' if self.safe_stop_reason else 'planning'
        values = {'tick_latency_p50_ms': f'{np.percentile(lat, 50):.2f}',
                  'tick_latency_p99_ms': f'{np.percentile(lat, 99):.2f}', 'frames': str(self.frames),
                  'decisions': str(self.decisions), 'missed_frames': str(self.missed),
                  'input_age_s': f'{self.inputs.age(time.monotonic()):.3f}',
                  'model_adapter_version': str(self.slots['model'].version),
                  'policy_adapter_version': str(self.slots['policy'].version), 'mode': self.mode}
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = now.to_msg()
        self.diag_pub.publish(array)


def main(args=None) -> None:
    spin(PlannerNode, args=args)


if __name__ == '__main__':
    main()
