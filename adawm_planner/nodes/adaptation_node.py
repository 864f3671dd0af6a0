"""adaptation_node: watches the drive, measures model and policy mismatch, finetunes one side with LoRA,
and pushes the adapter to the planner over its parameter service.

It turns the bridge's frames into model steps with core's StepPipeline — the planner's and the embedded
tasks' own observation and reward code — and stores each step (observation, the action the planner
commanded, reward, episode start / end) in a new-task replay. A worker thread — one torch thread, lowered
CPU priority, so the planner is never starved — takes a finetuning step every `train_every` new steps:
measures ε_P and ε_π on the newest `window`, publishes adawm_msgs/MismatchReport, updates the side the rule
picks, and every `push_every` steps exports that side's adapter and sets it on the planner with one
SetParametersAtomically call. core's AdapterLifecycle keeps versions (never reused), the round on trial and
the last good adapters; the planner's answer goes out as adawm_msgs/AdapterStatus.

After every frame it takes and every finetuning step it ends, it says how far it is on /adawm/adaptation_progress
(diagnostic_msgs/DiagnosticStatus: the newest frame's sim time and the finetuning steps requested, skipped,
finished and pending), so a lockstep bridge (`wait_for_adaptation`) can hold the simulation until it has caught up.
"""
from __future__ import annotations

import collections
import dataclasses
import os
import queue
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
import torch
from adawm_msgs.msg import AdapterStatus, EpisodeOutcome, MismatchReport
from diagnostic_msgs.msg import DiagnosticStatus
from rcl_interfaces.msg import Parameter as ParameterMsg, ParameterDescriptor, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParametersAtomically
from rclpy.node import Node

from adawm_planner.core import lora
from adawm_planner.core.adaptation import Finetuner
from adawm_planner.core.checkpoint import CheckpointError, load_checkpoint
from adawm_planner.core.config import CommandConfig, FinetuneConfig, LifecycleConfig
from adawm_planner.core.knobs import knob, knobs
from adawm_planner.core.pipeline import StepPipeline
from adawm_planner.core.replay import Replay
from adawm_planner.core.rollback import AdapterJudge, AdapterLifecycle
from adawm_planner.nodes import convert, params, progress, qos, spin

DECISION_CODES = {'model': MismatchReport.DECISION_UPDATE_MODEL, 'policy': MismatchReport.DECISION_UPDATE_POLICY,
                  'both': MismatchReport.DECISION_UPDATE_MODEL, 'none': MismatchReport.DECISION_NONE}
TERMINAL_OUTCOMES = (EpisodeOutcome.OUTCOME_SUCCESS, EpisodeOutcome.OUTCOME_COLLISION, EpisodeOutcome.OUTCOME_OFF_ROUTE)


@dataclasses.dataclass
class NodeConfig:
    replay_capacity: int = knob(20000, 'new-task steps kept for finetuning', low=64)


class AdaptationNode(Node):
    def __init__(self):
        super().__init__('adaptation_node')
        # Every parameter is start-only: checked as it is declared (YAML and command-line values too).
        knob_fields = {f.name: f for cls in (FinetuneConfig, LifecycleConfig, NodeConfig, CommandConfig)
                       for f in knobs(cls)}
        self.add_on_set_parameters_callback(params.checker(knob_fields))
        ro = lambda text: ParameterDescriptor(description=text, read_only=True)
        try:
            for cls in (FinetuneConfig, LifecycleConfig, NodeConfig, CommandConfig):
                params.declare_knobs(self, cls, read_only=True)
            self.output = params.knob_values(self, CommandConfig).output
            self.config = params.knob_values(self, FinetuneConfig)
            lifecycle_config = params.knob_values(self, LifecycleConfig)
            capacity = params.knob_values(self, NodeConfig).replay_capacity
        except params.START_ERRORS as exc:
            raise params.start_error('adaptation_node', exc) from None
        d = self.declare_parameter
        self.checkpoint_dir = d('checkpoint', '', ro('pretrained checkpoint; empty = the shipped one')).value \
            or convert.default_checkpoint()
        self.role = d('role_name', 'ego_vehicle', ro('ego role name')).value
        planner = d('planner_node', 'planner_node', ro('node whose parameters receive adapters')).value
        default_state = os.environ.get('ADAWM_STATE_DIR', str(Path.home() / '.adawm' / 'adaptation'))
        state_dir = d('state_dir', default_state, ro('adapter history and version counter')).value
        self.key = convert.signing_key(self, d('adapter_key_file', '', ro(
            'file with the HMAC-SHA256 key shared with the planner; empty = the per-user key ($ADAWM_KEY_FILE or '
            '~/.adawm/adapter.key), created on first use')).value)

        torch.set_num_threads(1)
        # Finetuning only gets CPU nobody else wants: SCHED_IDLE on Linux (measured with nice 10 alone, the
        # planner's tick p99 was 60 ms beside it on 2 cores), the lowest nice level elsewhere.
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except (AttributeError, OSError):
            os.nice(19)
        try:
            self.agent, self.meta = load_checkpoint(self.checkpoint_dir)
        except CheckpointError as exc:
            raise SystemExit(f'adaptation_node: cannot load checkpoint: {exc}') from None
        contract = self.meta['contract']
        try:
            self.tuner = Finetuner.from_checkpoint(self.agent, self.config, self.checkpoint_dir)
        except ValueError as exc:   # what this checkpoint cannot serve, e.g. policy_signal without its reference
            raise SystemExit(f'adaptation_node: {exc}') from None
        spec = self.meta['spec']
        self.replay = Replay(capacity, spec['bev_shape'], spec['ego_dim'], spec['action_dim'])
        self.tuner.attach(self.replay)
        self.replay_lock = threading.Lock()   # the executor adds, the worker samples
        # the latest episodes' outcomes (1 = not a success) for the episode-level ε_π; under replay_lock
        self.failures = collections.deque(maxlen=self.config.outcome_window)
        judge = (AdapterJudge(lifecycle_config.rollback_episodes, lifecycle_config.rollback_margin)
                 if lifecycle_config.rollback_episodes > 0 else None)   # 0: e.g. a real drive without outcomes
        self.lifecycle = AdapterLifecycle(state_dir, judge)
        self.push_every = lifecycle_config.push_every

        self.inputs = convert.InputState()
        self.pipeline = StepPipeline(contract)
        self.actions = contract.action_table()
        self.last_control = (0.0, 0.0, 1.0)
        self.verdicts: queue.Queue = queue.Queue()
        self.new_steps = 0
        self.work: queue.Queue = queue.Queue(maxsize=1)
        self.requested = self.skipped = self.finished = 0   # finetuning steps; pending = the rest
        self.unsettled = 0   # verdicts on adapters the worker has yet to act on

        convert.subscribe_inputs(self, self.inputs, self.role, self._on_input)
        _, command_topic = convert.OUTPUTS[self.output]   # the planner's command, whichever form it takes
        self.create_subscription(convert.output_type(self.output), command_topic.replace('ROLE', self.role),
                                 self._on_control, qos.SENSOR_IN)
        self.create_subscription(EpisodeOutcome, '/adawm/episode', self._on_episode, qos.EVENTS_IN)
        self.report_pub = self.create_publisher(MismatchReport, '/adawm/mismatch', 10)
        self.status_pub = self.create_publisher(AdapterStatus, '/adawm/adapter_status', 10)
        self.progress_pub = self.create_publisher(DiagnosticStatus, progress.TOPIC, qos.STREAM)
        # atomically: the planner must see bytes, sha256 and version of an adapter in one call
        self.set_params = self.create_client(SetParametersAtomically, f'/{planner}/set_parameters_atomically')
        self.worker = threading.Thread(target=self._work_loop, daemon=True)
        self.running = True
        self.worker.start()
        report = self.tuner.trainable_report()
        self.get_logger().info(
            f'adapting with strategy {self.config.strategy} (C={self.config.threshold_c}, rank {self.config.rank}); '
            f'trainable: model {100 * report["model"]["fraction"]:.2f}%, policy '
            f'{100 * report["policy"]["fraction"]:.2f}% of base; next adapter version {self.lifecycle.version + 1}')

    # ---- steps ---------------------------------------------------------------------------------------
    def _on_control(self, msg) -> None:
        speed = self.inputs.ego['speed'] if self.inputs.ego else 0.0
        self.last_control = convert.control_of_msg(self.output, msg, speed, self.actions, self.pipeline.contract.step_period)

    def _on_episode(self, msg) -> None:
        """The episode's last step becomes terminal (unless it merely timed out); the new route that follows
        starts the next episode in the pipeline."""
        with self.replay_lock:
            if msg.outcome in TERMINAL_OUTCOMES and len(self.replay):
                self.replay.is_terminal[(self.replay.next - 1) % self.replay.capacity] = True
            if msg.outcome != EpisodeOutcome.OUTCOME_RESET:   # an outside reset says nothing of the policy
                self.failures.append(msg.outcome != EpisodeOutcome.OUTCOME_SUCCESS)
        verdict = self.lifecycle.episode(msg.episode_return, msg.outcome == EpisodeOutcome.OUTCOME_SUCCESS)
        if verdict:
            self.unsettled += 1
            self.verdicts.put(verdict)   # acted on by the worker, which owns the finetuner's modules
            self._progress()

    def _on_input(self, store, msg) -> None:
        store(msg)
        stamp = self.inputs.frame(time.monotonic())
        if stamp is None:
            return
        self._take(stamp)
        self._progress()   # after any finetuning step the frame asked for: the bridge sees it pending

    def _take(self, stamp: float) -> None:
        if self.inputs.problem(time.monotonic(), float('inf')) is not None:
            return
        step = self.pipeline.step(stamp, self.inputs.scene(), self.last_control)
        if step is None:
            return
        action = np.zeros(self.replay.action.shape[1]) if step.is_first else \
            self.agent.encode_action(self.actions.index(dict(zip(('throttle', 'steer', 'brake'), step.control))))
        with self.replay_lock:
            self.replay.add(step.obs, action, step.reward, step.is_first, False)
        self.new_steps += not step.is_first
        if self.new_steps >= self.config.train_every and len(self.replay) >= max(self.config.window,
                                                                                 self.agent.preset.seq_len):
            self.new_steps = 0
            self.requested += 1
            try:
                self.work.put_nowait(stamp)
            except queue.Full:
                self.skipped += 1   # the worker is still busy with the previous step: skip, never pile up

    def _progress(self) -> None:
        self.progress_pub.publish(progress.progress_msg(self.inputs.done_stamp, self.requested, self.skipped,
                                                       self.finished, self.unsettled))

    # ---- finetuning, off the executor ----------------------------------------------------------------
    def _work_loop(self) -> None:
        p = self.agent.preset
        while self.running:
            while not self.verdicts.empty():
                self._settle(self.verdicts.get())
                self.unsettled -= 1
                self._guarded(self._progress)
            try:
                self.work.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                with self.replay_lock:
                    batch = self.replay.sample(p.batch, p.seq_len)
                    window = {**self.replay.newest(self.config.window),
                              'failures': np.array(self.failures, np.float64)}
                out = self.tuner.step(batch, window)
            except Exception as exc:   # keep the node (and the planner's adapter) alive; say what failed
                self.get_logger().error(f'finetuning step failed: {exc!r}')
                self.finished += 1   # a failed step is over too: a waiting bridge must not wait for it
                self._guarded(self._progress)
                continue
            self.finished += 1
            self.lifecycle.trained({'model': ['model'], 'policy': ['policy'], 'both': ['model', 'policy']}
                                   .get(out['decision'], []))
            self._guarded(self._report, out)
            if self.tuner.steps % self.push_every == 0 and self.lifecycle.ready():
                self._guarded(self._push_round)
            self._guarded(self._progress)   # after the push: a lockstep run drives its next frame with the new adapter

    def _guarded(self, publish, *args) -> None:
        try:
            publish(*args)
        except Exception as exc:   # e.g. the context is shutting down under us
            if self.running and rclpy.ok():
                self.get_logger().error(f'publishing / pushing failed: {exc!r}')

    def _report(self, out: dict) -> None:
        msg = MismatchReport(model_mismatch=float(out['eps_model']), policy_mismatch=float(out['eps_policy']),
                             threshold_c=float(self.config.threshold_c), decision=DECISION_CODES[out['decision']],
                             window_size=int(self.config.window), finetune_step=int(self.tuner.steps),
                             adapter_version=int(self.lifecycle.version))
        msg.header.stamp = self.get_clock().now().to_msg()
        self.report_pub.publish(msg)

    def _push_round(self) -> None:
        """Export each side trained since the last round under a new version and set it on the planner. The
        applied ones go on trial together, and the lifecycle hears of the round before anyone hears it
        applied: every episode reported after an adapter's status counts against it."""
        targets = self.lifecycle.take_round()
        if self.config.strategy == 'full':
            return   # full finetuning has no adapter to push: its weights are the whole model
        sent = []
        for target in targets:
            adapter = self.tuner.export_adapter(target, self.lifecycle.next_version())
            lora.save(adapter, self.lifecycle.state_dir / f'{target}_v{adapter.meta.version}')
            sent.append((target, adapter, self._send(target, adapter)))
        self.lifecycle.applied({target: adapter for target, adapter, reason in sent if not reason})
        for target, adapter, reason in sent:
            self._status(target, adapter, AdapterStatus.STATE_REJECTED if reason else AdapterStatus.STATE_APPLIED,
                         reason)

    def _settle(self, verdict) -> None:
        """Kept: nothing to do but say so. Worse: back to the last good adapters (or the plain base), in the
        planner and in the finetuner, so learning resumes from the good point."""
        rollbacks = self.lifecycle.settle(verdict)
        if verdict.keep:
            self.get_logger().info(f'adapter v{verdict.version} kept: {verdict.reason}')
        for target, bad, good in rollbacks:
            module = self.agent.module(target)
            if good is not None:
                lora.load_into(module, good)
                restore = good   # its own version again: the planner already validated these bytes once
            else:
                lora.reset(module, target)
                restore = self.tuner.export_adapter(target, self.lifecycle.next_version())   # LoRA B = 0: the base
            reason = self._send(target, restore)
            self._status(target, bad, AdapterStatus.STATE_ROLLED_BACK,
                         f'{verdict.reason}; back to v{restore.meta.version}' + (f' (failed: {reason})' if reason else ''))

    def _send(self, target: str, adapter: lora.Adapter) -> str:
        """One set_parameters_atomically call; returns '' when the planner applied it, else why not."""
        prefix = f'adapter.{target}.'
        values = [('data', ParameterValue(type=ParameterType.PARAMETER_BYTE_ARRAY,
                                          byte_array_value=[bytes([b]) for b in adapter.blob])),
                  ('sha256', ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=adapter.sha256)),
                  ('version', ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=adapter.meta.version))]
        values.append(('signature', ParameterValue(type=ParameterType.PARAMETER_STRING,
                                                   string_value=lora.sign(adapter.blob, self.key))))
        if not self.set_params.wait_for_service(timeout_sec=5.0):
            return 'planner parameter service not available'
        started = time.monotonic()
        request = SetParametersAtomically.Request(parameters=[ParameterMsg(name=prefix + n, value=v) for n, v in values])
        future = self.set_params.call_async(request)
        while not future.done() and time.monotonic() - started < 10.0 and self.running:
            time.sleep(0.01)
        if not future.done():
            return 'planner did not answer within 10 s'
        result = future.result().result
        return '' if result.successful else result.reason

    def _status(self, target, adapter, state, reason) -> None:
        self.status_pub.publish(convert.adapter_status_msg(
            target, adapter.meta.version, state, reason, self.get_clock().now().nanoseconds, adapter,
            self.tuner.trainable_report()[target]['fraction']))
        verdict = {AdapterStatus.STATE_APPLIED: 'applied by the planner', AdapterStatus.STATE_REJECTED: f'rejected: {reason}',
                   AdapterStatus.STATE_ROLLED_BACK: f'rolled back: {reason}'}[state]
        self.get_logger().info(f'{target} adapter v{adapter.meta.version} ({len(adapter.blob)} bytes) {verdict}')

    def shutdown(self) -> None:
        self.running = False
        self.worker.join(timeout=5.0)


def main(args=None) -> None:
    spin(AdaptationNode, args=args)


if __name__ == '__main__':
    main()
