"""`adawm analyze BAG --checkpoint X [--adapter A ...]`: the world model run offline over a recorded drive.

No DDS: the bag is read with rosbags and each message deserialized into its ROS type and fed to the same
InputState and core StepPipeline the planner uses, so every model step sees exactly the observation the
planner saw. At each step the world model filters the recorded observation and command: the prior (what it
predicted) against the posterior (what the drive showed) gives a per-step TV, and the current policy (base +
adapters) against the pretrained one on the same observations another (eps_model / eps_policy in steps.csv).
The decision AdaWM would take is the adaptation node's: over the last `window` steps, the calibrated ε_P
(k-step open-loop surprise against the checkpoint's mismatch reference) and ε_π (reward received), with the
episode-level part from the latest `outcome_window` episodes that ended in the drive (collision, off route
or arrival), and mismatch.decide. A checkpoint without a reference falls back to the window means of the
per-step TVs, and the summary says so.

Writes steps.csv, timeline.png, montage.png (real BEV beside the model's prediction at the moments of
highest model mismatch) and summary.md into OUT. Whatever cannot be analysed (missing topics, unknown
types, a truncated file) is skipped and said so in the summary, never a traceback.
"""
from __future__ import annotations

import collections
import csv
import heapq
import math
import time
from pathlib import Path

import numpy as np
import torch

from adawm_planner.core import lora, metrics, mismatch
from adawm_planner.core.bev import to_rgb
from adawm_planner.core.checkpoint import CheckpointError, load_checkpoint
from adawm_planner.core.config import FinetuneConfig
from adawm_planner.core.networks import TwoHot
from adawm_planner.nodes.convert import stamp_seconds
from adawm_planner.nodes.drive import RecordedDrive, read_drive

FIELDS = ['time', 'episode', 'eps_model', 'eps_policy', 'window_eps_model', 'window_eps_policy',
          'window_eps_policy_episodes', 'decision', 'predicted_reward', 'reward', 'ttc', 'speed', 'collision', 'event']
EVENT_TOPICS = {'/adawm/episode': 'episode end', '/adawm/adapter_status': 'adapter change'}
CHUNK = 64                 # model steps the world model filters in one pass
MONTAGE = 6                # steps of highest model mismatch kept for the montage


class Analysis(RecordedDrive):
    """The world model over one drive: feed it decoded messages in recording order, then `finish`."""
    purpose, label = 'the analysis', 'analyze'

    def __init__(self, checkpoint, adapters=(), role: str = 'ego_vehicle',
                 threshold_c: float = FinetuneConfig.threshold_c, window: int = FinetuneConfig.window,
                 outcome_window: int = FinetuneConfig.outcome_window):
        self.base, meta = load_checkpoint(checkpoint)
        try:
            self.reference = mismatch.load_reference(checkpoint)
        except CheckpointError:
            self.reference = None
        super().__init__(meta['contract'], role)
        self.current, _ = load_checkpoint(checkpoint)
        self.base.eval()
        self.current.eval()
        for path in adapters:
            adapter = lora.load(path)
            slot = lora.AdapterSlot(self.current.module(adapter.meta.target), adapter.meta.target)
            self.current.set_module(adapter.meta.target, slot.prepare(adapter.blob, adapter.sha256,
                                                                      adapter.meta.version)[0])
        self.adapted, self.threshold_c = bool(adapters), threshold_c
        self.actions = meta['contract'].action_table()
        self.latents = {'current': None, 'base': None}
        self.recent = collections.deque(maxlen=window)   # per step: TVs, model score, reward score
        self.failures = collections.deque(maxlen=outcome_window)   # 0/1 per episode that ended, newest last
        self.ended_episode = None
        self.carry = None   # the last steps of the previous chunk: the k-step surprise reaches back into them
        self.rows, self.chunk, self.montage, self.events = [], [], [], collections.defaultdict(list)
        self.pending_event = ''
        self.handlers[f'/carla/{role}/collision'] = self._on_collision

    def wants(self, topic: str) -> bool:
        return super().wants(topic) or topic in EVENT_TOPICS

    def message(self, topic: str, msg) -> None:
        if topic in EVENT_TOPICS:
            self.events[EVENT_TOPICS[topic]].append(stamp_seconds(msg.header.stamp))
            if topic == '/adawm/episode':
                self.pending_event = 'episode end'
            return
        self.handlers[topic](msg)

    def _on_collision(self, msg) -> None:
        self.inputs.on_collision(msg)
        self.events['collision'].append(stamp_seconds(msg.header.stamp))
        self.pending_event = 'collision'

    def on_step(self, step) -> None:
        """Steps wait in a chunk: the world model filters a chunk in one pass (its conv encoder batched)."""
        action = np.zeros(self.base.action_dim, np.float32) if step.is_first else self.current.encode_action(
            self.actions.index(dict(zip(('throttle', 'steer', 'brake'), step.control)))).numpy()
        self.chunk.append((step, action, self.pending_event, metrics.ttc(step.scene), tuple(self.failures)))
        self.pending_event = ''
        ended = metrics.episode_end(step.scene, step.progress)
        if ended and step.episode != self.ended_episode:
            self.ended_episode = step.episode
            self.failures.append(0.0 if ended == 'success' else 1.0)
        if len(self.chunk) == CHUNK:
            self.flush()

    @torch.inference_mode()
    def flush(self) -> None:
        if not self.chunk:
            return
        steps, actions, events, ttcs, failures = zip(*self.chunk)
        self.chunk = []
        batch = {'bev': torch.as_tensor(np.stack([s.obs['bev'] for s in steps]))[None],
                 'ego': torch.as_tensor(np.stack([s.obs['ego'] for s in steps]))[None],
                 'action': torch.as_tensor(np.stack(actions))[None],
                 'is_first': torch.tensor([[s.is_first for s in steps]])}
        posts, priors = self._filter(self.current, 'current', batch)
        wm = self.current.world_model
        eps_model = mismatch.tv(priors['logits'].exp(), posts['logits'].exp()).mean(-1)[0]   # (T,) mean over factors
        feat = wm.feat(posts)
        eps_policy = torch.zeros(len(steps))   # without adapters the current policy is the pretrained one
        if self.adapted:
            base_posts, _ = self._filter(self.base, 'base', batch)
            base_probs = self.base.actor_critic.actor(self.base.world_model.feat(base_posts)).exp()
            eps_policy = mismatch.tv(self.current.actor_critic.actor(feat).exp(), base_probs)[0]
        predicted = TwoHot(wm.reward_head(feat), wm.bins).mean()[0]
        prior_feat = wm.feat(priors)[0]
        model_scores = self._surprise(posts, batch)
        reward_scores = mismatch.reward_scores(torch.tensor([[s.reward for s in steps]]), batch['is_first'])
        for t, (step, event, ttc) in enumerate(zip(steps, events, ttcs)):
            self.recent.append((eps_model[t].item(), eps_policy[t].item(), model_scores[t], reward_scores[t]))
            window_model, window_policy, window_episodes = self._window(failures[t])
            self.rows.append({'time': round(step.stamp, 3), 'episode': step.episode, 'eps_model': eps_model[t].item(),
                              'eps_policy': eps_policy[t].item(), 'window_eps_model': window_model,
                              'window_eps_policy': window_policy, 'window_eps_policy_episodes': window_episodes,
                              'decision': '' if math.isnan(window_model) else mismatch.decide(
                                  window_model, window_policy, self.threshold_c, window_episodes) or 'none',
                              'predicted_reward': predicted[t].item(), 'reward': step.reward, 'ttc': ttc,
                              'speed': step.scene.ego.speed, 'collision': int(step.scene.collision), 'event': event})
            # the montage keeps the steps of highest model mismatch only (long recordings stay small in memory)
            entry = (eps_model[t].item(), len(self.rows), step.stamp, step.obs['bev'], prior_feat[t:t + 1])
            (heapq.heappush if len(self.montage) < MONTAGE else heapq.heappushpop)(self.montage, entry)

    def _window(self, failures):
        """ε_P, ε_π and ε_π's episode-level part on the latest steps, as the adaptation node measures them:
        once `window` steps are in (NaN before; the node does not measure a window that is not full)."""
        recent = np.array(self.recent)
        if self.reference is None:
            return float(recent[:, 0].mean()), float(recent[:, 1].mean()), 0.0
        if len(recent) < self.recent.maxlen:
            return math.nan, math.nan, math.nan
        return (self.reference.estimate('model', recent[:, 2]), self.reference.estimate('reward', recent[:, 3]),
                self.reference.estimate_failures(failures, 'actor'))

    def _surprise(self, posts, batch) -> np.ndarray:
        """The k-step open-loop surprise of the chunk's steps (NaN without a reference), reaching back into
        the previous chunk's last k steps."""
        if self.reference is None:
            return np.full(batch['is_first'].shape[1], np.nan)
        k, wm = self.reference.horizon, self.current.world_model
        states = {key: posts[key] for key in ('deter', 'stoch', 'logits')}
        action, is_first = batch['action'], batch['is_first']
        if self.carry is not None:
            states = {key: torch.cat([self.carry[0][key], v], 1) for key, v in states.items()}
            action, is_first = torch.cat([self.carry[1], action], 1), torch.cat([self.carry[2], is_first], 1)
        self.carry = ({key: v[:, -k:] for key, v in states.items()}, action[:, -k:], is_first[:, -k:])
        scores = mismatch.model_scores(wm, states, action, is_first, k,
                                       generator=torch.Generator().manual_seed(len(self.rows)))
        return scores[-batch['is_first'].shape[1]:]

    def _filter(self, agent, key, batch):
        """Posteriors and priors (1, T, ...) of a chunk, going on from the latent state the last chunk left;
        the sampling noise depends only on where the chunk starts in the drive (reproducible)."""
        wm = agent.world_model
        posts, priors = wm.observe(batch['bev'], batch['ego'], batch['action'], batch['is_first'], self.latents[key],
                                   generator=torch.Generator().manual_seed(len(self.rows)))
        self.latents[key] = {k: v[:, -1] for k, v in posts.items()}
        return posts, priors


def analyze(bag: str | Path, checkpoint: str | Path, out: str | Path, adapters=(), role: str = 'ego_vehicle',
            threshold_c: float = FinetuneConfig.threshold_c, window: int = FinetuneConfig.window,
            outcome_window: int = FinetuneConfig.outcome_window) -> dict:
    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    analysis = Analysis(checkpoint, adapters, role, threshold_c, window, outcome_window)
    notes: list[str] = []
    seen: collections.Counter = collections.Counter()
    read = read_drive(bag, analysis, notes, seen)
    bag_seconds = 0.0 if read is None else read[0]
    return _finish(out, analysis, notes, seen, bag_seconds, started)


def _finish(out, analysis: Analysis, notes, seen_topics, bag_seconds, started) -> dict:
    analysis.flush()
    rows, events, agent = analysis.rows, analysis.events, analysis.current
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    with open(out / 'steps.csv', 'w', newline='') as f:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    wall = time.perf_counter() - started
    summary = {'steps': len(rows), 'bag_seconds': round(bag_seconds, 2), 'wall_seconds': round(wall, 2),
               'real_time_factor': round(bag_seconds / wall, 1) if wall > 0 else None, 'notes': notes,
               'events': {k: len(v) for k, v in events.items()}, 'calibrated': analysis.reference is not None}
    lines = ['# Offline mismatch analysis', '']
    if rows:
        t = np.array([r['time'] for r in rows])
        eps_p, eps_pi = np.array([r['eps_model'] for r in rows]), np.array([r['eps_policy'] for r in rows])
        fig, ax = plt.subplots(figsize=(9, 3.5))
        ax.plot(t, eps_p, label='prior vs posterior TV, per step', linewidth=0.8, alpha=0.5)
        ax.plot(t, eps_pi, label='policy TV, per step', linewidth=0.8, alpha=0.5)
        ax.plot(t, [r['window_eps_model'] for r in rows], label='ε_P (the rule\'s, latest window)', linewidth=2)
        ax.plot(t, [r['window_eps_policy'] for r in rows], label='ε_π (the rule\'s, latest window)', linewidth=2)
        ax.plot(t, [r['window_eps_policy_episodes'] for r in rows], label='ε_π, episode level', linewidth=1.5,
                linestyle='--')
        styles = {'collision': ('red', '-'), 'episode end': ('grey', '--'), 'adapter change': ('green', ':')}
        for kind, times in events.items():
            color, style = styles[kind]
            for i, x in enumerate(times):
                ax.axvline(x, color=color, linestyle=style, alpha=0.7, label=kind if i == 0 else None)
        ax.set(xlabel='simulation time (s)', ylabel='mismatch, 0..1', title='mismatch along the drive')
        ax.legend(loc='upper right', fontsize=8)
        fig.tight_layout()
        fig.savefig(out / 'timeline.png', dpi=100)
        plt.close(fig)

        top = sorted(analysis.montage, reverse=True)
        fig, axes = plt.subplots(2, len(top), figsize=(2.2 * len(top), 4.6), squeeze=False)
        with torch.inference_mode():
            for i, (eps, _, stamp, real, prior_feat) in enumerate(top):
                predicted = (agent.world_model.bev_decoder(prior_feat)[0].clamp(0, 1) * 255).to(torch.uint8).numpy()
                axes[0][i].imshow(to_rgb(real))
                axes[0][i].set_title(f't={stamp:.1f} s\nε_P={eps:.2f}', fontsize=8)
                axes[1][i].imshow(to_rgb(predicted))
                for row in (0, 1):
                    axes[row][i].axis('off')
        axes[0][0].text(-8, 32, 'real', rotation=90, va='center', fontsize=9)
        axes[1][0].text(-8, 32, 'predicted', rotation=90, va='center', fontsize=9)
        fig.suptitle('highest model mismatch: real BEV (top) vs the prior\'s prediction (bottom)', fontsize=9)
        fig.tight_layout()
        fig.savefig(out / 'montage.png', dpi=100)
        plt.close(fig)
        decisions = collections.Counter(r['decision'] for r in rows if r['decision'])
        summary.update(decisions=dict(decisions), eps_model_mean=float(eps_p.mean()),
                       eps_policy_mean=float(eps_pi.mean()))
        lines += [f'- {len(rows)} model steps over {bag_seconds:.1f} s of recording, analysed in {wall:.1f} s '
                  f'({summary["real_time_factor"]}× real time)',
                  f'- ε_P mean {eps_p.mean():.3f} (max {eps_p.max():.3f} at t={t[eps_p.argmax()]:.1f} s); '
                  f'ε_π mean {eps_pi.mean():.3f}',
                  '- decisions AdaWM would take (the adaptation node\'s rule over the latest window'
                  + (', from the first full one on): ' if summary['calibrated'] else '): ')
                  + ', '.join(f'{k} {v}' for k, v in decisions.items())
                  + ('' if summary['calibrated'] else ' (the checkpoint has no mismatch reference: the rule read '
                     'the window means of the uncalibrated per-step TVs)'),
                  '- events: ' + (', '.join(f'{k} {len(v)}' for k, v in events.items()) or 'none'), '',
                  '![timeline](timeline.png)', '', '![montage](montage.png)', '']
    else:
        lines += ['Nothing could be analysed: no complete frame (map, route, odometry and objects) in the bag.', '']
    if notes:
        lines += ['## What was skipped and why', ''] + [f'- {n}' for n in notes] + ['']
    lines += ['## Messages read', ''] + [f'- {k}: {v}' for k, v in sorted(seen_topics.items())]
    (out / 'summary.md').write_text('\n'.join(lines) + '\n')
    return summary
