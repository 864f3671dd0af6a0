"""`adawm dataset BAG [BAG ...] --out DIR`: recorded drives -> training sequences (format: experiments/dataset.py).

Each bag is read as `adawm analyze` reads it (nodes/drive.py: the planner's InputState and the core
StepPipeline), so a step holds the BEV and ego vector the planner would have seen, reward from core/metrics
on the same Scene, and episode boundaries where the pipeline starts one (a new route, time running back).

Action mapping: the recorded command (CarlaEgoVehicleControl in force since the last step) becomes the
nearest discrete action of the contract — ActionTable.index: acceleration pedal·(throttle − brake) to the
nearest of `accelerations`, steer to the nearest of `steers`. What that rounding loses is reported per
dataset: mean and max |(throttle − brake) − (throttle_a − brake_a)| and |steer − steer_a| between the
recorded control and the chosen action's control.

Termination (core.metrics.termination on the step's Scene): collision, arrival and leaving the route end an
episode (`is_terminal`); the steps a recording holds after that, until the next reset, are skipped. A gap
(no model step for more than GAP_PERIODS step periods: frames missing from the recording) starts a new
segment (`is_first`) rather than inventing a transition across it. An arrival on a frame between two model
steps is not seen by any step when the next frame already starts the next episode (a bridge that resets at
once, as ours does: half the arrivals), nor is a collision there; so a step is held back until the next one
comes, and where a new episode follows an unfinished one, its last step becomes the terminal one: a
collision if a collision event came after it (the collision penalty at that step's speed), an arrival if it
was within one step's travel of arriving (remaining route < DESTINATION_RADIUS + speed · step period; the
destination reward). Skipped spans and their reasons go into
the manifest; a damaged or partial bag gives what was readable and notes, never a traceback. Steps before
the first recorded command (none on the topic, or not yet) are skipped: their action is unknown.
"""
from __future__ import annotations

import collections
import json
import time
from pathlib import Path

import numpy as np

from adawm_planner.core import metrics
from adawm_planner.core.contract import Contract
from adawm_planner.core.pipeline import Step
from adawm_planner.experiments.dataset import FORMAT, MANIFEST, ShardWriter
from adawm_planner.nodes.drive import RecordedDrive, read_drive

GAP_PERIODS = 1.5   # step periods between two steps beyond which the recording has a gap
NO_ACTION = -1      # action index of a segment's first step (the env's zero action at reset)
CONTROL_KEYS = ('throttle', 'steer', 'brake')


class DatasetDrive(RecordedDrive):
    """One bag's model steps -> the shard writer, with the mapping error, outcomes and skipped spans."""
    purpose, label = 'the dataset', 'dataset'

    def __init__(self, contract: Contract, writer: ShardWriter, first_episode: int, role: str = 'ego_vehicle'):
        super().__init__(contract, role)
        self.writer, self.table, self.period = writer, contract.action_table(), contract.step_period
        self.episode = first_episode - 1       # dataset-wide segment counter
        self.last_stamp, self.ended = None, None   # ended: the outcome that ended the current episode
        self.open = False        # whether the last step was written (else the next written one starts a segment)
        self.commanded = False   # whether a recorded command has come (before it, actions are unknown)
        self.command_topic = f'/carla/{role}/vehicle_control_cmd'
        self.steps, self.pedal_residual, self.steer_residual = 0, [], []
        self.outcomes, self.actions = collections.Counter(), collections.Counter()
        self.spans: list[dict] = []
        self.held = None   # (row, short of arriving, speed) of the last step, written once the next step shows
                           # whether its episode ended right after it
        self.between_steps = collections.Counter()   # episode ends on a frame between two steps

    def _skip(self, stamp: float, why: str) -> None:
        span = self.spans[-1] if self.spans else None
        if span is not None and span['why'] == why and span['to'] == self.last_stamp:
            span['to'], span['steps'] = stamp, span['steps'] + 1
        else:
            self.spans.append({'from': stamp, 'to': stamp, 'steps': 1, 'why': why})

    def on_step(self, step: Step) -> None:
        if step.is_first:   # the pipeline started an episode: first frame, new route, time ran back
            unfinished = self.held is not None and self.ended is None and not self.held[0]['is_first']
            row, short, speed = self.held if unfinished else (None, None, None)
            if unfinished and step.scene.collision:   # the event came after the held step: it is the last
                row.update(is_terminal=True, reward=row['reward'] - metrics.COLLISION_SCALE * speed)
                self.outcomes['collision'] += 1
                self.between_steps['collision'] += 1
            elif unfinished and short < metrics.DESTINATION_RADIUS:
                row.update(is_terminal=True, success=True, reward=row['reward'] + metrics.DESTINATION_REWARD)
                self.outcomes['success'] += 1
                self.between_steps['arrival'] += 1
            self.finish()
            self.ended = None
        why = None
        if self.ended is not None:   # the drive went on after a terminal event
            why = f'after the episode ended ({self.ended}), until the next reset'
        elif not step.is_first and not self.commanded:
            why = f'no command recorded yet on {self.command_topic}: the action is unknown'
        if why is not None:
            self._skip(step.stamp, why)
            self.last_stamp, self.open = step.stamp, False
            return
        gap = self.open and not step.is_first and step.stamp - self.last_stamp > GAP_PERIODS * self.period
        if gap:
            self.spans.append({'from': self.last_stamp, 'to': step.stamp, 'steps': 0,
                               'why': f'gap: {step.stamp - self.last_stamp:.2f} s between two steps (frames missing); '
                                      'a new segment starts'})
        first = step.is_first or gap or not self.open   # a segment starts: no action, no reward
        self.last_stamp, self.open = step.stamp, True
        if first:
            self.episode += 1
            action, reward, terminal = NO_ACTION, 0.0, False
        else:
            action = self.table.index(dict(zip(CONTROL_KEYS, step.control)))
            chosen = self.table.control(action)
            throttle, steer, brake = step.control
            self.pedal_residual.append(abs((throttle - brake) - (chosen['throttle'] - chosen['brake'])))
            self.steer_residual.append(abs(steer - chosen['steer']))
            self.actions[action] += 1
            ended = metrics.episode_end(step.scene, step.progress)
            reward, terminal = step.reward, ended is not None
            if ended:
                self.ended = ended
                self.outcomes[ended] += 1
        self.finish()
        # how far short of arriving the step is, less what the ego covers before the next step
        tracker = self.pipeline.tracker
        short = tracker.length - tracker.s - step.scene.ego.speed * self.period
        self.held = (dict(bev=step.obs['bev'], ego=step.obs['ego'], action=action, reward=reward, is_first=first,
                          is_terminal=terminal, success=terminal and self.ended == 'success', stamp=step.stamp,
                          episode=self.episode, control=step.control), short, abs(step.scene.ego.speed))
        self.steps += 1

    def finish(self) -> None:
        """Writes the step held back."""
        if self.held is not None:
            self.writer.add(**self.held[0])
            self.held = None

    def _on_control(self, msg) -> None:
        super()._on_control(msg)
        self.commanded = True


def build_dataset(bags, out, contract: Contract, contract_source: dict, task: str | None = None,
                  role: str = 'ego_vehicle', shard_steps: int = 1024) -> dict:
    """Converts `bags` into a dataset folder `out`; returns the manifest (also written as out/dataset.json)."""
    started = time.perf_counter()
    out = Path(out)
    writer = ShardWriter(out, shard_steps)
    sources, pedal, steer = [], [], []
    outcomes, actions = collections.Counter(), collections.Counter()
    episodes, recorded_seconds = 0, 0.0
    for bag in bags:
        drive = DatasetDrive(contract, writer, episodes, role)
        notes, seen = [], collections.Counter()
        read = read_drive(bag, drive, notes, seen)
        drive.finish()
        for outcome, count in sorted(drive.between_steps.items()):
            notes.append(f'{count} {outcome}(s) on a frame between two model steps, the next frame already a new '
                         f'episode: the last step before each marked as the {outcome}')
        seconds, topics = read if read is not None else (0.0, {})
        recorded_seconds += seconds
        if read is not None and not drive.steps:
            notes.append('no complete frame (map, route, odometry and objects): nothing converted')
        bag_episodes = drive.episode + 1 - episodes
        episodes = drive.episode + 1
        pedal += drive.pedal_residual
        steer += drive.steer_residual
        outcomes.update(drive.outcomes)
        actions.update(drive.actions)
        sources.append({'bag': str(bag), 'topics': topics, 'messages_read': dict(sorted(seen.items())),
                        'seconds': round(seconds, 3), 'steps': drive.steps, 'segments': bag_episodes,
                        'outcomes': dict(drive.outcomes), 'skipped_spans': drive.spans, 'notes': notes})
    writer.flush()
    wall = time.perf_counter() - started
    summary = lambda values: ({'mean': float(np.mean(values)), 'max': float(np.max(values))} if values else None)
    manifest = {
        'format': FORMAT, 'contract': contract.to_dict(), 'contract_source': contract_source, 'task': task,
        'role': role, 'steps': sum(s['steps'] for s in writer.shards), 'segments': episodes,
        'outcomes': dict(outcomes), 'sources': sources, 'shards': writer.shards,
        'action_mapping': {
            'rule': 'nearest discrete action (ActionTable.index): pedal acceleration '
                    f'{contract.pedal_acceleration} m/s² · (throttle − brake) to the nearest of '
                    f'{list(contract.accelerations)}, steer to the nearest of {list(contract.steers)}',
            'pedal_residual': summary(pedal), 'steer_residual': summary(steer),
            'actions': {str(k): v for k, v in sorted(actions.items())}},
        'conversion': {'recorded_seconds': round(recorded_seconds, 3), 'wall_seconds': round(wall, 3),
                       'recorded_minutes_per_wall_minute': round(recorded_seconds / wall, 2) if wall > 0 else None},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + '\n')
    return manifest
