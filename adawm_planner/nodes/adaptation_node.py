"""adaptation_node: watches the drive, measures model and policy mismatch, finetunes one side with LoRA,
and pushes the adapter to the planner over its parameter service.

It builds transitions from the same topics and with the same Scene / observation / reward code as the
planner and the embedded tasks: every `model_period` of simulation time one step (observation, the action
the planner commanded, reward, episode start / end). A worker thread — one torch thread, lowered CPU
priority, so the planner is never starved — takes a finetuning step every `train_every` new transitions:
measures ε_P and ε_π on the newest `window`, publishes adawm_msgs/MismatchReport, updates the side the
rule picks, and every `push_every` steps exports that side's adapter (version counter never reused) and
sets it on the planner with one SetParameters call. The planner's answer — applied, or rejected with its
reason — goes out as adawm_msgs/AdapterStatus. The last adapter the planner accepted is kept on disk.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
import torch
from adawm_msgs.msg import AdapterStatus, EpisodeOutcome, MismatchReport
from carla_msgs.msg import CarlaEgoVehicleControl
from rcl_interfaces.msg import Parameter as ParameterMsg, ParameterDescriptor, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParametersAtomically
from rclpy.node import Node

from adawm_planner.core import lora, metrics
from adawm_planner.core.adaptation import STRATEGIES, FinetuneConfig, Finetuner
from adawm_planner.core.checkpoint import CheckpointError, load_checkpoint, load_replay_summary
from adawm_planner.core.replay import Replay
from adawm_planner.core.rollback import AdapterJudge
from adawm_planner.nodes import convert, qos, spin

DECISION_CODES = {'model': MismatchReport.DECISION_UPDATE_MODEL, 'policy': MismatchReport.DECISION_UPDATE_POLICY,
                  'both': MismatchReport.DECISION_UPDATE_MODEL, 'none': MismatchReport.DECISION_NONE}


class AdaptationNode(Node):
    def __init__(self):
        super().__init__('adaptation_node')
        p = self.declare_parameter
        ro = lambda text: ParameterDescriptor(description=text, read_only=True)
        self.checkpoint_dir = p('checkpoint', '', ro('pretrained checkpoint; empty = the shipped one')).value \
            or convert.default_checkpoint()
        self.role = p('role_name', 'ego_vehicle', ro('ego role name')).value
        strategy = p('strategy', 'adawm', ro(f'one of {STRATEGIES}')).value
        self.model_period = p('model_period', 0.1, ro('s of simulation per transition')).value
        threshold_c = p('threshold_c', 5.0, ro('C of the rule eps_P > C * eps_pi')).value
        rank = p('rank', 8, ro('LoRA rank')).value
        window = p('window', 64, ro('transitions the mismatches are measured on')).value
        self.train_every = p('train_every', 8, ro('new transitions per finetuning step')).value
        self.push_every = p('push_every', 10, ro('finetuning steps per adapter push')).value
        planner = p('planner_node', 'planner_node', ro('node whose parameters receive adapters')).value
        default_state = os.environ.get('ADAWM_STATE_DIR', str(Path.home() / '.adawm' / 'adaptation'))
        self.state_dir = Path(p('state_dir', default_state, ro('adapter history and version counter')).value)
        self.capacity = p('replay_capacity', 20000, ro('new-task transitions kept')).value
        rollback_episodes = p('rollback_episodes', 3, ro('episodes an adapter is judged on; 0 = no judging')).value
        rollback_margin = p('rollback_margin', 0.2, ro('relative fall in return that rolls an adapter back')).value
        self.v_des = p('v_des', 4.0, ro('m/s the reward\'s speed term aims for (CarDreamer: 4)')).value
        self.key = convert.read_key(p('adapter_key_file', '', ParameterDescriptor(
            description='file holding the HMAC-SHA256 key shared with the planner; when set, adapters are signed',
            read_only=True)).value)

        torch.set_num_threads(1)
        # Finetuning only gets CPU nobody else wants: SCHED_IDLE on Linux (measured with nice 10 alone, the
        # planner's tick p99 was 60 ms beside it on 2 cores), the lowest nice level elsewhere.
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except (AttributeError, OSError):
            os.nice(19)
        try:
            self.agent, self.meta = load_checkpoint(self.checkpoint_dir)
            summary = load_replay_summary(self.checkpoint_dir)
        except CheckpointError as exc:
            raise SystemExit(f'adaptation_node: cannot load checkpoint: {exc}') from None
        self.config = FinetuneConfig(strategy=strategy, threshold_c=threshold_c, rank=rank, window=window)
        self.tuner = Finetuner(self.agent, self.config, summary)
        spec = self.meta['spec']
        self.replay = Replay(self.capacity, spec['bev_shape'], spec['ego_dim'], spec['action_dim'])
        self.replay_lock = threading.Lock()   # the executor adds, the worker samples
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.version = self._load_version()

        self.inputs = convert.InputState()
        self.observer = convert.Observer(spec['bev_shape'][0])
        self.actions = convert.ActionTable(self.meta['task'])
        self.last_step_time = None
        self.last_control = CarlaEgoVehicleControl(brake=1.0)
        self.episode_started = True
        # 0 episodes: no judging (e.g. a real drive without the embedded bridge's episode outcomes)
        self.judge = AdapterJudge(rollback_episodes, rollback_margin) if rollback_episodes > 0 else None
        self.on_trial: dict[str, lora.Adapter] = {}     # pushed and applied, not yet judged
        self.last_good: dict[str, lora.Adapter] = {}    # judged good
        self.verdicts: queue.Queue = queue.Queue()
        self.new_transitions = 0
        self.work: queue.Queue = queue.Queue(maxsize=1)
        self.touched: set[str] = set()

        ns = f'/carla/{self.role}'
        convert.subscribe_inputs(self, self.inputs, self.role, self._on_input)
        self.create_subscription(CarlaEgoVehicleControl, f'{ns}/vehicle_control_cmd', self._on_control,
                                 qos.SENSOR_IN)
        self.create_subscription(EpisodeOutcome, '/adawm/episode', self._on_episode, qos.EVENTS_IN)
        self.report_pub = self.create_publisher(MismatchReport, '/adawm/mismatch', 10)
        self.status_pub = self.create_publisher(AdapterStatus, '/adawm/adapter_status', 10)
        # atomically: the planner must see bytes, sha256 and version of an adapter in one call
        self.set_params = self.create_client(SetParametersAtomically, f'/{planner}/set_parameters_atomically')
        self.worker = threading.Thread(target=self._work_loop, daemon=True)
        self.running = True
        self.worker.start()
        report = self.tuner.trainable_report()
        self.get_logger().info(
            f'adapting with strategy {strategy} (C={threshold_c}, rank {rank}); trainable: model '
            f'{100 * report["model"]["fraction"]:.2f}%, policy {100 * report["policy"]["fraction"]:.2f}% of base; '
            f'next adapter version {self.version + 1}')

    # ---- transitions ---------------------------------------------------------------------------------
    def _on_control(self, msg) -> None:
        self.last_control = msg

    def _on_episode(self, msg) -> None:
        """The episode's last step becomes terminal (unless it merely timed out); the next frame starts anew."""
        if msg.outcome in (EpisodeOutcome.OUTCOME_SUCCESS, EpisodeOutcome.OUTCOME_COLLISION,
                           EpisodeOutcome.OUTCOME_OFF_ROUTE) and len(self.replay):
            with self.replay_lock:
                self.replay.is_terminal[(self.replay.next - 1) % self.replay.capacity] = True
        self.episode_started = True
        verdict = self.judge and self.judge.episode(msg.episode_return, msg.outcome == EpisodeOutcome.OUTCOME_SUCCESS)
        if verdict:
            self.verdicts.put(verdict)   # acted on by the worker, which owns the finetuner's modules

    def _on_input(self, store, msg) -> None:
        store(msg)
        stamp = self.inputs.frame(time.monotonic())
        if stamp is None or self.inputs.problem(time.monotonic(), float('inf')) is not None:
            return
        if self.last_step_time is not None and stamp - self.last_step_time < self.model_period - 1e-6:
            return
        self.last_step_time = stamp
        scene = self.inputs.scene()
        control = {'throttle': self.last_control.throttle, 'steer': self.last_control.steer,
                   'brake': self.last_control.brake}
        obs = self.observer.observe(scene, control)
        if self.episode_started:
            with self.replay_lock:
                self.replay.add(obs, np.zeros(self.replay.action.shape[1]), 0.0, True, False)
            self.episode_started = False
            return
        action = self.actions.index(control)
        reward = float(sum(metrics.reward_terms(scene, self.observer.progress, self.v_des).values()))
        with self.replay_lock:
            self.replay.add(obs, self.agent.encode_action(action).numpy(), reward, False, False)
        self.new_transitions += 1
        if self.new_transitions >= self.train_every and len(self.replay) >= max(self.config.window,
                                                                                self.agent.preset.seq_len):
            self.new_transitions = 0
            try:
                self.work.put_nowait(stamp)
            except queue.Full:
                pass   # the worker is still busy with the previous step: skip, never pile up

    # ---- finetuning, off the executor ----------------------------------------------------------------
    def _work_loop(self) -> None:
        from adawm_planner.core.finetune import newest_window
        p = self.agent.preset
        while self.running:
            self._handle_verdicts()
            try:
                self.work.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                with self.replay_lock:
                    batch = self.replay.sample(p.batch, p.seq_len)
                    window = newest_window(self.replay, self.config.window)
                out = self.tuner.step(batch, window)
            except Exception as exc:   # keep the node (and the planner's adapter) alive; say what failed
                self.get_logger().error(f'finetuning step failed: {exc!r}')
                continue
            decision = out['decision']
            if decision in ('model', 'both'):
                self.touched.add('model')
            if decision in ('policy', 'both'):
                self.touched.add('policy')
            try:
                self._report(out, decision)
                # one round of adapters on trial at a time: the next waits for the verdict on these
                if self.tuner.steps % self.push_every == 0 and not self.on_trial and self.touched:
                    self._push_round()
            except Exception as exc:   # e.g. the context is shutting down under us
                if self.running and rclpy.ok():
                    self.get_logger().error(f'publishing / pushing failed: {exc!r}')

    def _handle_verdicts(self) -> None:
        while not self.verdicts.empty():
            verdict = self.verdicts.get()
            if verdict.keep:
                self.get_logger().info(f'adapter v{verdict.version} kept: {verdict.reason}')
                self.last_good.update(self.on_trial)
                self.on_trial.clear()
            else:
                self._roll_back(verdict)

    def _report(self, out: dict, decision: str) -> None:
        msg = MismatchReport(model_mismatch=float(out['eps_model']), policy_mismatch=float(out['eps_policy']),
                             threshold_c=float(self.config.threshold_c), decision=DECISION_CODES[decision],
                             window_size=int(self.config.window), finetune_step=int(self.tuner.steps),
                             adapter_version=int(self.version))
        msg.header.stamp = self.get_clock().now().to_msg()
        self.report_pub.publish(msg)

    def _push_round(self) -> None:
        """Export each side touched since the last round under a new version and set it on the planner. The
        applied ones go on trial together, and the judge hears of the round before anyone hears it applied:
        every episode reported after an adapter's status counts against it."""
        targets, self.touched = sorted(self.touched), set()
        if self.config.strategy == 'full':
            return   # full finetuning has no adapter to push: its weights are the whole model
        sent = []
        for target in targets:
            self.version += 1
            self._save_version()
            adapter = self.tuner.export_adapter(target, self.version)
            lora.save(adapter, self.state_dir / f'{target}_v{self.version}')
            sent.append((target, adapter, self._send(target, adapter)))
        if self.judge is not None:
            self.on_trial.update({target: adapter for target, adapter, reason in sent if not reason})
            if self.on_trial:
                self.judge.applied(max(adapter.meta.version for adapter in self.on_trial.values()))
        for target, adapter, reason in sent:
            self._status(target, adapter, AdapterStatus.STATE_REJECTED if reason else AdapterStatus.STATE_APPLIED,
                         reason)

    def _send(self, target: str, adapter: lora.Adapter) -> str:
        """One set_parameters_atomically call; returns '' when the planner applied it, else why not."""
        prefix = f'adapter.{target}.'
        params = [_param(prefix + 'data', ParameterValue(type=ParameterType.PARAMETER_BYTE_ARRAY,
                                                         byte_array_value=[bytes([b]) for b in adapter.blob])),
                  _param(prefix + 'sha256', ParameterValue(type=ParameterType.PARAMETER_STRING,
                                                           string_value=adapter.sha256)),
                  _param(prefix + 'version', ParameterValue(type=ParameterType.PARAMETER_INTEGER,
                                                            integer_value=adapter.meta.version))]
        if self.key is not None:
            params.append(_param(prefix + 'signature', ParameterValue(type=ParameterType.PARAMETER_STRING,
                                                                      string_value=lora.sign(adapter.blob, self.key))))
        if not self.set_params.wait_for_service(timeout_sec=5.0):
            return 'planner parameter service not available'
        started = time.monotonic()
        future = self.set_params.call_async(SetParametersAtomically.Request(parameters=params))
        while not future.done() and time.monotonic() - started < 10.0 and self.running:
            time.sleep(0.01)
        if not future.done():
            return 'planner did not answer within 10 s'
        result = future.result().result
        return '' if result.successful else result.reason

    def _roll_back(self, verdict) -> None:
        """The adapters on trial drove worse: back to the last good ones (or the plain base), in the planner
        and in the finetuner, so learning resumes from the good point."""
        for target, bad in sorted(self.on_trial.items()):
            module = self.agent.world_model if target == 'model' else self.agent.actor_critic
            good = self.last_good.get(target)
            if good is not None:
                lora.load_into(module, good)
                restore = good   # its own version again: the planner already validated these bytes once
            else:
                lora.reset(module, target)
                self.version += 1
                self._save_version()
                restore = self.tuner.export_adapter(target, self.version)   # LoRA B = 0: the plain base
            reason = self._send(target, restore)
            self._status(target, bad, AdapterStatus.STATE_ROLLED_BACK,
                         f'{verdict.reason}; back to v{restore.meta.version}' + (f' (failed: {reason})' if reason else ''))
        self.on_trial.clear()

    def _status(self, target, adapter, state, reason) -> None:
        msg = AdapterStatus(version=adapter.meta.version, target=AdapterStatus.TARGET_MODEL if target == 'model'
                            else AdapterStatus.TARGET_POLICY, rank=adapter.meta.rank,
                            trainable_parameters=adapter.parameter_count, sha256=adapter.sha256, state=state,
                            reason=reason)
        msg.trainable_fraction = float(self.tuner.trainable_report()[target]['fraction'])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.status_pub.publish(msg)
        verdict = {AdapterStatus.STATE_APPLIED: 'applied by the planner', AdapterStatus.STATE_REJECTED: f'rejected: {reason}',
                   AdapterStatus.STATE_ROLLED_BACK: f'rolled back: {reason}'}[state]
        self.get_logger().info(f'{target} adapter v{adapter.meta.version} ({len(adapter.blob)} bytes) {verdict}')

    # ---- version counter: persisted, never reused ----------------------------------------------------
    def _load_version(self) -> int:
        path = self.state_dir / 'version'
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            return 0

    def _save_version(self) -> None:
        tmp = self.state_dir / '.version.tmp'
        tmp.write_text(f'{self.version}\n')
        os.replace(tmp, self.state_dir / 'version')

    def shutdown(self) -> None:
        self.running = False
        self.worker.join(timeout=5.0)


def _param(name: str, value: ParameterValue) -> ParameterMsg:
    return ParameterMsg(name=name, value=value)


def main(args=None) -> None:
    spin(AdaptationNode, args=args)


if __name__ == '__main__':
    main()
