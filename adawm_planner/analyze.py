"""`adawm analyze BAG --checkpoint X [--adapter A ...]`: the world model run offline over a recorded drive.

No DDS: the bag is read with rosbags, each message deserialized into its ROS type and fed to the same
InputState / Observer the planner uses, so every step sees exactly the observation the planner saw. At the
model's step period the world model filters the recorded observations and commands: the prior (what it
predicted) against the posterior (what the drive showed) gives ε_P per step; the current policy (base +
adapters) against the pretrained one on the same observations gives ε_π. The decision AdaWM would take
uses the mean over the last `window` steps, as the adaptation node does.

Writes steps.csv, timeline.png, montage.png (real BEV beside the model's prediction at the moments of
highest model mismatch) and summary.md into OUT. Whatever cannot be analysed (missing topics, unknown
types, a truncated file) is skipped and said so in the summary, never a traceback.
"""
from __future__ import annotations

import collections
import contextlib
import csv
import time
from pathlib import Path

import numpy as np
import torch
from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import Reader

from adawm_planner.core import lora, metrics, mismatch
from adawm_planner.core.bev import to_rgb
from adawm_planner.core.checkpoint import load_checkpoint
from adawm_planner.nodes.bag import message_class
from adawm_planner.nodes.convert import ActionTable, InputState, Observer, stamp_seconds

NEEDED = ('/carla/map', '/carla/ego_vehicle/waypoints', '/carla/ego_vehicle/odometry', '/carla/ego_vehicle/objects')
FIELDS = ['time', 'episode', 'eps_model', 'eps_policy', 'window_eps_model', 'window_eps_policy', 'decision',
          'predicted_reward', 'reward', 'ttc', 'speed', 'collision', 'event']


def analyze(bag: str | Path, checkpoint: str | Path, out: str | Path, adapters=(), role: str = 'ego_vehicle',
            model_period: float = 0.1, threshold_c: float = 5.0, window: int = 64, v_des: float = 4.0) -> dict:
    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base, meta = load_checkpoint(checkpoint)
    current, _ = load_checkpoint(checkpoint)
    base.eval()
    current.eval()
    for path in adapters:
        adapter = lora.load(path)
        module = current.world_model if adapter.meta.target == 'model' else current.actor_critic
        slot = lora.AdapterSlot(module, adapter.meta.target)
        adapted, _ = slot.prepare(adapter.blob, adapter.sha256, adapter.meta.version)
        if adapter.meta.target == 'model':
            current.world_model = adapted
        else:
            current.actor_critic = adapted

    ns = f'/carla/{role}'
    notes: list[str] = []
    rows: list[dict] = []
    frames_for_montage: list[tuple[float, float, np.ndarray, np.ndarray]] = []
    events = collections.defaultdict(list)   # kind -> times
    inputs, observer, actions = InputState(), Observer(base.world_model.bev_shape[0]), ActionTable(meta['task'])
    state = {'current': None, 'base': None, 'action': torch.zeros(base.action_dim), 'episode': 0, 'last': None,
             'last_route': None, 'pending_event': ''}
    recent = collections.deque(maxlen=window)
    seen_topics: collections.Counter = collections.Counter()
    bag_seconds = 0.0

    def filter_step(agent, key, obs, is_first, seed):
        wm = agent.world_model
        generator = torch.Generator().manual_seed(seed)
        bev = torch.as_tensor(obs['bev'])[None]
        ego = torch.as_tensor(obs['ego'], dtype=torch.float32)[None]
        prev = wm.initial(1) if state[key] is None else state[key]
        post, prior = wm.rssm.obs_step(prev, state['action'][None], wm.embed(bev, ego), torch.tensor([is_first]),
                                       generator)
        state[key] = post
        return post, prior

    @torch.inference_mode()
    def step(stamp):
        scene = inputs.scene()
        control = {'throttle': inputs_control['throttle'], 'steer': inputs_control['steer'],
                   'brake': inputs_control['brake']}
        is_first = state['last_route'] is not inputs.route
        if is_first:
            state['last_route'] = inputs.route
            state['current'] = state['base'] = None
            state['action'] = torch.zeros(base.action_dim)
            if rows:
                state['episode'] += 1
        obs = observer.observe(scene, control)
        seed = len(rows)
        post, prior = filter_step(current, 'current', obs, is_first, seed)
        eps_model = mismatch.prior_posterior_tv(prior['logits'].exp(), post['logits'].exp()).item()
        feat = current.world_model.feat(post)
        eps_policy = 0.0   # without adapters the current policy is the pretrained one
        if adapters:
            base_post, _ = filter_step(base, 'base', obs, is_first, seed)
            base_probs = base.actor_critic.actor(base.world_model.feat(base_post)).exp()
            eps_policy = mismatch.tv(current.actor_critic.actor(feat).exp(), base_probs).mean().item()
        recent.append((eps_model, eps_policy))
        window_model, window_policy = np.mean(recent, axis=0)
        reward_pred = _predicted_reward(current, feat)
        reward = sum(metrics.reward_terms(scene, observer.progress, v_des).values())
        rows.append({'time': round(stamp, 3), 'episode': state['episode'], 'eps_model': eps_model,
                     'eps_policy': eps_policy, 'window_eps_model': window_model, 'window_eps_policy': window_policy,
                     'decision': mismatch.decide(window_model, window_policy, threshold_c),
                     'predicted_reward': reward_pred, 'reward': reward, 'ttc': metrics.ttc(scene),
                     'speed': scene.ego.speed, 'collision': int(scene.collision), 'event': state['pending_event']})
        state['pending_event'] = ''
        inputs.collided = False
        frames_for_montage.append((eps_model, stamp, obs['bev'], current.world_model.feat(prior)))
        state['action'] = current.encode_action(actions.index(control))

    inputs_control = {'throttle': 0.0, 'steer': 0.0, 'brake': 1.0}

    def on_control(msg):
        inputs_control.update(throttle=msg.throttle, steer=msg.steer, brake=msg.brake)

    handlers = {'/carla/map': inputs.on_map, f'{ns}/waypoints': inputs.on_route, f'{ns}/odometry': inputs.on_odometry,
                f'{ns}/objects': inputs.on_objects, f'{ns}/collision': inputs.on_collision,
                f'{ns}/vehicle_status': inputs.on_vehicle_status, f'{ns}/vehicle_control_cmd': on_control}
    source = _open_bag(bag, notes)
    if source is None:
        return _finish(out, rows, frames_for_montage, events, notes, seen_topics, 0.0, started, current)
    topics, bag_seconds, messages = source
    for topic in NEEDED:
        if topic.replace('ego_vehicle', role) not in topics:
            notes.append(f'{topic} is not in the bag: no Scene can be built without it')
    classes, skipped = {}, {}
    for topic, msgtype in topics.items():
        if topic in handlers or topic in ('/adawm/episode', '/adawm/adapter_status'):
            try:
                classes[topic] = message_class(msgtype)
            except (ImportError, AttributeError, ValueError):
                skipped[topic] = f'type {msgtype} is not installed'
        else:
            skipped[topic] = 'not used by the analysis'
    for topic, why in sorted(skipped.items()):
        notes.append(f'skipped {topic}: {why}')
    try:
        # Streams that only matter at a model step stay serialized until one comes: at 20 Hz frames and
        # 10 Hz steps, half the decoding (the costly part of reading) is never done.
        lazy = {f'{ns}/objects', f'{ns}/vehicle_status', f'{ns}/vehicle_control_cmd'}
        pending: dict[str, bytes] = {}

        def decode(topic, data):
            try:
                return deserialize_message(data, classes[topic])
            except Exception as exc:   # one corrupt message does not end the analysis
                seen_topics[f'{topic} (undecodable)'] += 1
                if seen_topics[f'{topic} (undecodable)'] == 1:
                    notes.append(f'{topic}: a message could not be decoded ({exc}); such messages skipped')
                return None

        for topic, data in messages:
            if topic not in classes:
                continue
            seen_topics[topic] += 1
            if topic in lazy:
                pending[topic] = data
                continue
            msg = decode(topic, data)
            if msg is None:
                continue
            if topic == '/adawm/episode':
                events['episode end'].append(stamp_seconds(msg.header.stamp))
                state['pending_event'] = 'episode end'
                continue
            if topic == '/adawm/adapter_status':
                events['adapter change'].append(stamp_seconds(msg.header.stamp))
                continue
            handlers[topic](msg)
            if topic == f'{ns}/collision':
                events['collision'].append(stamp_seconds(msg.header.stamp))
                state['pending_event'] = 'collision'
            if topic != f'{ns}/odometry' or inputs.ego_stamp is None:
                continue
            stamp = inputs.ego_stamp
            if state['last'] is not None and stamp < state['last']:
                state['last'] = None   # time ran backwards: the simulator was reset
            if state['last'] is not None and stamp - state['last'] < model_period - 1e-6:
                continue
            for topic in sorted(pending):   # the bridge sends objects and status before odometry
                decoded = decode(topic, pending.pop(topic))
                if decoded is not None:
                    handlers[topic](decoded)
            # a recorder may have caught a frame's objects after its odometry: take the latest objects
            # if they are at most one bridge tick older
            frame = inputs.frame(wall_now=0.0, tolerance=0.06)
            if frame is None or inputs.problem(wall_now=0.0, timeout=float('inf')) is not None:
                continue
            state['last'] = frame
            step(frame)
    except Exception as exc:   # a truncated or damaged file: keep what was read
        notes.append(f'the bag ends early or is damaged ({type(exc).__name__}: {exc}); analysed what came before')
    return _finish(out, rows, frames_for_montage, events, notes, seen_topics, bag_seconds, started, current)


def _open_bag(bag, notes):
    """(topic -> type, seconds, iterator of (topic, serialized bytes)) through rosbags; for an MCAP whose end
    is missing (a recording cut short) by streaming its records from the start; None if neither works."""
    try:
        reader = Reader(bag)
        reader.open()
    except Exception as exc:   # rosbags raises several unrelated types for unreadable bags
        path = Path(bag)
        mcaps = sorted(path.glob('*.mcap')) if path.is_dir() else [path] if path.suffix == '.mcap' else []
        if not mcaps:
            notes.append(f'the bag could not be opened: {exc}')
            return None
        notes.append(f'the bag could not be opened as a whole ({exc}); read {mcaps[0].name} record by record')
        return _stream_mcap(mcaps[0], notes)

    def messages():
        with contextlib.closing(reader):
            for conn, _, data in reader.messages():
                yield conn.topic, bytes(data)
    seconds = reader.duration / 1e9 if reader.message_count else 0.0
    return {c.topic: c.msgtype for c in reader.connections}, seconds, messages()


def _stream_mcap(path: Path, notes):
    from mcap.records import Channel, Message, Schema
    from mcap.stream_reader import StreamReader

    schemas, channels, records = {}, {}, []
    try:
        with open(path, 'rb') as f:
            for record in StreamReader(f, skip_magic=False).records:
                if isinstance(record, Schema):
                    schemas[record.id] = record.name
                elif isinstance(record, Channel):
                    channels[record.id] = (record.topic, schemas.get(record.schema_id, ''))
                elif isinstance(record, Message) and record.channel_id in channels:
                    records.append((record.log_time, channels[record.channel_id][0], bytes(record.data)))
    except Exception as exc:   # the damage: everything before it is kept
        notes.append(f'{path.name} breaks off after {len(records)} messages ({type(exc).__name__}: {exc})')
    if not records:
        return None
    records.sort(key=lambda r: r[0])
    topics = {topic: msgtype for topic, msgtype in channels.values()}
    seconds = (records[-1][0] - records[0][0]) / 1e9
    return topics, seconds, ((topic, data) for _, topic, data in records)


def _predicted_reward(agent, feat) -> float:
    from adawm_planner.core.networks import TwoHot
    wm = agent.world_model
    return TwoHot(wm.reward_head(feat), wm.bins).mean().item()


def _finish(out, rows, frames, events, notes, seen_topics, bag_seconds, started, agent) -> dict:
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
               'events': {k: len(v) for k, v in events.items()}}
    lines = ['# Offline mismatch analysis', '']
    if rows:
        t = np.array([r['time'] for r in rows])
        eps_p, eps_pi = np.array([r['eps_model'] for r in rows]), np.array([r['eps_policy'] for r in rows])
        fig, ax = plt.subplots(figsize=(9, 3.5))
        ax.plot(t, eps_p, label='ε_P (model mismatch)', linewidth=1)
        ax.plot(t, eps_pi, label='ε_π (policy mismatch)', linewidth=1)
        ax.plot(t, [r['window_eps_model'] for r in rows], label='ε_P, window mean', linewidth=2, alpha=0.6)
        styles = {'collision': ('red', '-'), 'episode end': ('grey', '--'), 'adapter change': ('green', ':')}
        for kind, times in events.items():
            color, style = styles[kind]
            for i, x in enumerate(times):
                ax.axvline(x, color=color, linestyle=style, alpha=0.7, label=kind if i == 0 else None)
        ax.set(xlabel='simulation time (s)', ylabel='TV distance', title='mismatch along the drive')
        ax.legend(loc='upper right', fontsize=8)
        fig.tight_layout()
        fig.savefig(out / 'timeline.png', dpi=100)
        plt.close(fig)

        top = sorted(frames, key=lambda f: -f[0])[:6]
        fig, axes = plt.subplots(2, len(top), figsize=(2.2 * len(top), 4.6), squeeze=False)
        with torch.inference_mode():
            for i, (eps, stamp, real, prior_feat) in enumerate(top):
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
        decisions = collections.Counter(r['decision'] for r in rows)
        summary.update(decisions=dict(decisions), eps_model_mean=float(eps_p.mean()),
                       eps_policy_mean=float(eps_pi.mean()))
        lines += [f'- {len(rows)} model steps over {bag_seconds:.1f} s of recording, analysed in {wall:.1f} s '
                  f'({summary["real_time_factor"]}× real time)',
                  f'- ε_P mean {eps_p.mean():.3f} (max {eps_p.max():.3f} at t={t[eps_p.argmax()]:.1f} s); '
                  f'ε_π mean {eps_pi.mean():.3f}',
                  '- decisions AdaWM would take (window mean, rule ε_P > C·ε_π): '
                  + ', '.join(f'{k} {v}' for k, v in decisions.items()),
                  '- events: ' + (', '.join(f'{k} {len(v)}' for k, v in events.items()) or 'none'), '',
                  '![timeline](timeline.png)', '', '![montage](montage.png)', '']
    else:
        lines += ['Nothing could be analysed: no complete frame (map, route, odometry and objects) in the bag.', '']
    if notes:
        lines += ['## What was skipped and why', ''] + [f'- {n}' for n in notes] + ['']
    lines += ['## Messages read', ''] + [f'- {k}: {v}' for k, v in sorted(seen_topics.items())]
    (out / 'summary.md').write_text('\n'.join(lines) + '\n')
    return summary
