"""planner_node: carla-ros-bridge topics in, a vehicle command out (CarlaEgoVehicleControl by default, or
Autoware's Control / an AckermannDriveStamped: `output`), planned with the world model.

Frame by frame: when odometry and objects of one simulation time have arrived, core's StepPipeline turns
the Scene into the model's steps (one per step period of the checkpoint's contract); at a step the node
filters the latent state and plans within `budget_ms` (the anytime planner), in between it repeats the last
command. Inputs that cannot be trusted — missing, stale, not finite, time running backwards — command a safe
stop, held until they have been clean for `fault_hold` s (core/guard.py), with the reason and the offending
publisher on /diagnostics. Parameters follow ros2/demos: declared with descriptors, every value (start values
too) checked in on_set, a set_parameters_atomically call refused whole when any part fails, applied after
(post-set; on Humble, at the end of a successful on_set). LoRA adapters arrive as parameters
(adapter.<model|policy>.data with .sha256, .version and — unless allow_unsigned_adapters — .signature, or
.path inside `adapter_dir`): checked and built off to the side in on_set, swapped in before the next plan.
"""
from __future__ import annotations

import dataclasses
import gc
import threading
import time

import numpy as np
import rclpy
import torch
from adawm_msgs.msg import AdapterStatus
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from sensor_msgs.msg import Image
from visualization_msgs.msg import MarkerArray

from adawm_planner.core import lora
from adawm_planner.core.bev import to_rgb
from adawm_planner.core.checkpoint import CheckpointError, load_checkpoint
from adawm_planner.core.config import CommandConfig, PlannerConfig, PlannerNodeConfig
from adawm_planner.core.guard import FaultHold, FrameLog, PlanBudget
from adawm_planner.core.knobs import knobs
from adawm_planner.core.pipeline import StepPipeline
from adawm_planner.nodes import convert, params, qos, spin

SAFE_STOP = dict(throttle=0.0, steer=0.0, brake=1.0)


class PlannerNode(Node):
    def __init__(self):
        super().__init__('planner_node')
        torch.set_num_threads(1)   # one core for the planner; the adaptation node gets the other
        self.slots, self.knob_fields, self.staged, self.ready = {}, {}, None, False
        self.add_on_set_parameters_callback(self._on_set_parameters)
        if params.has_post_set(self):
            self.add_post_set_parameters_callback(lambda _: self._apply_staged())
        ro = lambda text: ParameterDescriptor(description=text, read_only=True)
        d = self.declare_parameter
        self.checkpoint_dir = d('checkpoint', '', ro('pretrained checkpoint directory; empty = the shipped one')).value \
            or convert.default_checkpoint()
        self.role = d('role_name', 'ego_vehicle', ro('ego role name (topics under /carla/ROLE)')).value
        self.adapter_dir = d('adapter_dir', '', ro('where adapter.<target>.path files may live; empty = none')).value
        key_file = d('adapter_key_file', '', ro('file with the HMAC-SHA256 key adapters must be signed with; empty = '
                                                'the per-user key ($ADAWM_KEY_FILE or ~/.adawm/adapter.key), '
                                                'created on first use')).value
        if d('allow_unsigned_adapters', False, ro('accept adapters without a valid signature: then anyone on the '
                                                  'DDS domain can change the planner\'s weights')).value:
            key = None
            self.get_logger().warning('allow_unsigned_adapters is set: any node on this DDS domain can replace '
                                      'the planner\'s adapters')
        else:
            key = convert.signing_key(self, key_file)
        try:
            self.agent, self.meta = load_checkpoint(self.checkpoint_dir)
        except CheckpointError as exc:
            raise SystemExit(f'planner_node: cannot load checkpoint: {exc}') from None
        self.agent.eval()
        self.contract = self.meta['contract']
        self.slots = {target: lora.AdapterSlot(self.agent.module(target), target, key) for target in lora.TARGETS}
        self.knob_fields = {f.name: f for cls in (PlannerConfig, PlannerNodeConfig, CommandConfig) for f in knobs(cls)}
        try:
            params.declare_knobs(self, PlannerConfig, read_only=False)
            params.declare_knobs(self, CommandConfig, read_only=True)
            for field in knobs(PlannerNodeConfig):
                d(field.name, field.default, params.descriptor(field, read_only=field.name == 'rate'))
            for target in lora.TARGETS:
                for name, (default, descriptor) in params.ADAPTER_PARAMETERS.items():
                    d(f'adapter.{target}.{name}', default, descriptor)
        except params.START_ERRORS as exc:
            raise params.start_error('planner_node', exc) from None
        self.config = params.knob_values(self, PlannerConfig)
        self.agent.search = self.config   # plan mode's search knobs (iterations, elites, ...)
        self.settings = params.knob_values(self, PlannerNodeConfig)
        self.output = params.knob_values(self, CommandConfig).output
        self.pending: dict[str, tuple] = {}
        self.pending_lock = threading.Lock()

        self.inputs = convert.InputState()
        self.pipeline = StepPipeline(self.contract)
        self.actions = self.contract.action_table()
        self.driver_state, self.command = None, dict(SAFE_STOP)
        self.safe_stop_reason = 'waiting for inputs'
        self.hold, self.budget = FaultHold(self.settings.fault_hold), PlanBudget(self.config.budget_ms / 1000)
        self.fault_report = ''   # the last input fault, kept for /diagnostics after recovery
        self.ticks, self.decisions = FrameLog(), 0

        convert.subscribe_inputs(self, self.inputs, self.role, self._on_input)
        _, topic = convert.OUTPUTS[self.output]
        self.control_pub = self.create_publisher(convert.output_type(self.output), topic.replace('ROLE', self.role),
                                                 qos.STREAM)
        self.marker_pub = self.create_publisher(MarkerArray, '/adawm/imagined_trajectories', 1)
        self.image_pub = self.create_publisher(Image, '/adawm/decoded_bev', 1)
        self.diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.status_pub = self.create_publisher(AdapterStatus, '/adawm/adapter_status', 10)
        steady = rclpy.clock.Clock(clock_type=rclpy.clock.ClockType.STEADY_TIME)
        self.create_timer(1.0 / self.settings.rate, self._watchdog, clock=steady)
        self.create_timer(1.0, self._publish_diagnostics, clock=steady)
        # One decision on a blank observation before the first frame: torch's first calls are slow.
        spec = self.meta['spec']
        blank = {'bev': np.zeros(spec['bev_shape'], np.uint8), 'ego': np.zeros(spec['ego_dim'], np.float32)}
        self._act(blank, None)
        # The model and message types stay for the node's life: keep them out of the cyclic GC's scans,
        # whose full passes otherwise land as latency spikes on planning ticks.
        gc.collect()
        gc.freeze()
        self.ready = True
        k, h = self._lookahead()
        self.get_logger().info(f'planning with {self.checkpoint_dir} (preset {self.agent.preset.name}, mode '
                               f'{self.config.mode}, K={k}, H={h}, step {self.contract.step_period} s)')

    # ---- parameters: check all in on_set, apply after ------------------------------------------------
    def _on_set_parameters(self, parameters) -> SetParametersResult:
        try:
            return self._check_parameters(parameters)
        except Exception as exc:   # an answer for every call: a checking fault never takes the node down
            self.get_logger().error(f'checking parameters failed: {exc!r}')
            return SetParametersResult(successful=False, reason=f'could not check the parameters: {exc!r}')

    def _check_parameters(self, parameters) -> SetParametersResult:
        reason = params.invalid(self.knob_fields, parameters)
        if reason or not self.ready:   # while declaring: start values are checked, and read once declared
            return SetParametersResult(successful=not reason, reason=reason or '')
        given = {p.name: p.value for p in parameters}
        prepared = {}
        for target, slot in self.slots.items():
            prefix = f'adapter.{target}.'
            if not any(n.startswith(prefix) for n in given):
                continue
            # the bytes (or path) must come in this very call; the rest may stand from an earlier one
            fields = {name: given.get(prefix + name) if name in ('data', 'path')
                      else given.get(prefix + name, self.get_parameter(prefix + name).value) for name in params.ADAPTER_PARAMETERS}
            try:
                prepared[target] = slot.prepare_fields(fields, self.adapter_dir)
            except lora.AdapterError as exc:
                reason = f'{target} adapter rejected: {exc}'
                self.get_logger().warning(reason)
                version = given.get(prefix + 'version', 0)   # (what a status message can carry: uint32)
                self._status(target, version if isinstance(version, int) and 0 <= version < 2 ** 32 else 0,
                             AdapterStatus.STATE_REJECTED, reason)
                return SetParametersResult(successful=False, reason=reason)
        # everything in the call passed: nothing is applied before this point, so a refused call leaves no trace
        self.staged = ({n: v for n, v in given.items() if n in self.knob_fields}, prepared)
        if not params.has_post_set(self):
            self._apply_staged()
        return SetParametersResult(successful=True)

    def _apply_staged(self) -> None:
        if self.staged is None:
            return
        values, prepared = self.staged
        self.staged = None
        if values:
            ours = lambda cls: {k: v for k, v in values.items() if k in {f.name for f in knobs(cls)}}
            self.config = self.agent.search = dataclasses.replace(self.config, **ours(PlannerConfig))
            self.settings = dataclasses.replace(self.settings, **ours(PlannerNodeConfig))
            self.hold.hold, self.budget.budget_s = self.settings.fault_hold, self.config.budget_ms / 1000
        if prepared:
            with self.pending_lock:
                self.pending.update(prepared)

    def _swap_pending(self) -> None:
        with self.pending_lock:
            pending, self.pending = self.pending, {}
        for target, (module, adapter) in pending.items():
            started = time.perf_counter()
            self.agent.set_module(target, module)
            self.slots[target].applied(adapter)
            self._status(target, adapter.meta.version, AdapterStatus.STATE_APPLIED, '', adapter)
            self.get_logger().info(f'{target} adapter v{adapter.meta.version} applied '
                                   f'({1000 * (time.perf_counter() - started):.2f} ms swap)')

    def _status(self, target, version, state, reason, adapter=None):
        self.status_pub.publish(convert.adapter_status_msg(target, version, state, reason,
                                                           self.get_clock().now().nanoseconds, adapter))

    # ---- frames ---------------------------------------------------------------------------------------
    def _on_input(self, store, msg) -> None:
        store(msg)
        started, frame_started = time.monotonic(), time.perf_counter()
        stamp = self.inputs.frame(started)
        if stamp is None:
            return
        try:
            self._swap_pending()
            reason = self._fault_or_hold(stamp, started)
            if reason is not None:
                self._safe_stop(reason, stamp)
            else:
                if self.safe_stop_reason:
                    self.get_logger().info(f'inputs sane again; planning resumes ({self.safe_stop_reason})')
                self.safe_stop_reason = ''
                control = (self.command['throttle'], self.command['steer'], self.command['brake'])
                step = self.pipeline.step(stamp, self.inputs.scene(), control)
                if step is not None:
                    self._decide(step, frame_started)
                self._publish_control(self.command, stamp)
        except Exception as exc:   # a fault never kills the node: stop safely and say why
            self.get_logger().error(f'planning failed: {exc!r}')
            self._safe_stop(f'planning failed: {exc!r}', stamp)
        self.ticks.record(stamp, time.monotonic() - started)

    def _fault_or_hold(self, stamp: float, wall_now: float) -> str | None:
        """Why this frame must not be planned on: a fault now (named with its publisher), or the hold after one."""
        fault = self.inputs.problem(wall_now, self.settings.input_timeout)
        taken = self.inputs.take_fault()
        if taken is not None and fault is None:
            name = convert.publisher_name(self, taken[1])
            fault = self.fault_report = taken[0] + (f' (from {name})' if name else '')
        return self.hold.check(stamp, fault)

    def _watchdog(self) -> None:
        reason = self.inputs.problem(time.monotonic(), self.settings.input_timeout)
        if reason is not None:
            self.hold.fault(reason)
            self._safe_stop(reason)

    def _lookahead(self) -> tuple[int, int]:
        p = self.agent.preset
        return self.config.candidates or p.plan_candidates, self.config.horizon or p.plan_horizon

    def _act(self, obs, state, frame_started=None):
        action, state, info = self.agent.act(obs, state, self.config.mode, *self._lookahead(),
                                             self.budget.deadline(frame_started), self.budget.step_estimate,
                                             self.budget.score_estimate)
        if info and frame_started is not None:   # the start-up warm-up (slow first calls) tells nothing
            self.budget.record(info)
        return action, state, info

    def _decide(self, step, frame_started: float) -> None:
        if step.is_first:
            # the sampling noise of an episode depends on nothing but its start time: reproducible on replay
            self.driver_state = None
            self.agent.generator.manual_seed(round(step.stamp / self.contract.step_period))
        action, self.driver_state, info = self._act(step.obs, self.driver_state, frame_started)
        self.command = self.actions.control(action)
        self.decisions += 1
        if info:
            self._publish_plan(step.scene, info)
        if self.settings.image_every and self.decisions % self.settings.image_every == 0:
            self._publish_decoded_bev()

    def _safe_stop(self, reason: str, frame_stamp: float | None = None) -> None:
        kind = lambda text: text.split(' (')[0].split(':')[0]   # 'inputs are stale (1.2 s ...)' -> its kind
        if kind(reason) != kind(self.safe_stop_reason):   # once per kind, not at every tick while it lasts
            self.get_logger().warning(f'safe stop: {reason}')
        self.safe_stop_reason = reason
        self.driver_state, self.command = None, dict(SAFE_STOP)
        self.pipeline.restart()
        self._publish_control(self.command, frame_stamp)

    def _publish_control(self, command: dict, frame_stamp: float | None = None) -> None:
        """A command answering a frame carries that frame's time; a watchdog stop carries the clock's."""
        stamp = (rclpy.time.Time(nanoseconds=round(frame_stamp * 1e9)).to_msg() if frame_stamp is not None
                 else self.get_clock().now().to_msg())
        speed = self.inputs.ego['speed'] if self.inputs.ego else 0.0
        self.control_pub.publish(convert.command_msg(self.output, command, speed, self.actions,
                                                     self.contract.step_period, stamp, bool(self.safe_stop_reason)))

    def _publish_plan(self, scene, info) -> None:
        if self.marker_pub.get_subscription_count():
            paths = self.actions.paths(scene.ego, info['actions'].argmax(-1).numpy(), self.contract.step_period)
            self.marker_pub.publish(convert.plan_markers_msg(paths, info['best'], self.get_clock().now().nanoseconds))

    def _publish_decoded_bev(self) -> None:
        if self.image_pub.get_subscription_count() == 0 or self.driver_state is None:
            return
        with torch.inference_mode():
            feat = self.agent.world_model.feat(self.driver_state['latent'])
            bev = (self.agent.world_model.bev_decoder(feat)[0].clamp(0, 1) * 255).to(torch.uint8).numpy()
        self.image_pub.publish(convert.image_msg(to_rgb(bev), self.get_clock().now().nanoseconds, self.role))

    def _publish_diagnostics(self) -> None:
        k, h = self._lookahead()
        values = {**self.ticks.report(), 'decisions': str(self.decisions),
                  'input_age_s': f'{self.inputs.age(time.monotonic()):.3f}',
                  'model_adapter_version': str(self.slots['model'].version),
                  'policy_adapter_version': str(self.slots['policy'].version), 'mode': self.config.mode,
                  'candidates': str(k), 'horizon': str(h), 'last_input_fault': self.fault_report,
                  **self.budget.report()}
        message = f'safe stop: {self.safe_stop_reason}' if self.safe_stop_reason else 'planning'
        crowded = convert.crowded_inputs(self, self.role)
        if crowded:   # a second source on an input topic: a misconfigured graph, or someone injecting
            values['inputs_with_several_publishers'] = ', '.join(f'{t} ({n})' for t, n in crowded.items())
            message += '; several publishers on ' + ', '.join(crowded)
        self.diag_pub.publish(convert.diagnostics_msg('adawm/planner', self.role, bool(self.safe_stop_reason or crowded),
                                                      message, values, self.get_clock().now().nanoseconds))


def main(args=None) -> None:
    spin(PlannerNode, args=args)


if __name__ == '__main__':
    main()
