"""A recorded drive, read offline: a rosbag2 folder (or a cut-short MCAP) opened with rosbags, each message
decoded (rosbags' own CDR decoder: no ROS message classes needed, ~2x faster than rclpy's on object arrays)
and fed to the planner's own InputState and core StepPipeline, so whatever reads a bag (`adawm analyze`,
`adawm dataset`) gets exactly the model steps the planner would have seen.

`RecordedDrive` holds the frame -> step path; a reader subclasses it and receives each model step in
`on_step`. `read_drive` runs a bag through one: topics nobody wants, types not installed, undecodable
messages and a damaged file are written into `notes`, never raised.
"""
from __future__ import annotations

import collections
import contextlib
import struct
from pathlib import Path

from rosbags.rosbag2 import Reader
from tqdm import tqdm

from adawm_planner.core.contract import Contract
from adawm_planner.core.pipeline import Step, StepPipeline
from adawm_planner.nodes.bag import typestore_with
from adawm_planner.nodes.convert import InputState

NEEDED = ('/carla/map', '/carla/ego_vehicle/waypoints', '/carla/ego_vehicle/odometry', '/carla/ego_vehicle/objects')
OBJECTS_TOLERANCE = 0.06   # s: a recorder may catch a frame's objects just before its odometry: one tick older is fine


class RecordedDrive:
    """Decoded messages in recording order -> model steps (`on_step`), as the planner node makes them."""
    purpose = 'the reading'   # what the notes say a topic is not used by
    label = 'read'            # the progress bar's

    def __init__(self, contract: Contract, role: str = 'ego_vehicle'):
        self.role = role
        self.inputs, self.pipeline = InputState(), StepPipeline(contract)
        self.control = (0.0, 0.0, 1.0)   # the latest recorded command (throttle, steer, brake)
        ns = f'/carla/{role}'
        self.odometry = f'{ns}/odometry'
        self.handlers = {'/carla/map': self.inputs.on_map, f'{ns}/waypoints': self.inputs.on_route,
                         self.odometry: self.inputs.on_odometry, f'{ns}/objects': self.inputs.on_objects,
                         f'{ns}/collision': self.inputs.on_collision,
                         f'{ns}/vehicle_status': self.inputs.on_vehicle_status,
                         f'{ns}/vehicle_control_cmd': self._on_control}
        # streams that only matter at a model step: left serialized until one comes (at 20 Hz frames and
        # 10 Hz steps, half the decoding — the costly part of reading — is never done)
        self.lazy = {f'{ns}/objects', f'{ns}/vehicle_status', f'{ns}/vehicle_control_cmd'}

    def wants(self, topic: str) -> bool:
        return topic in self.handlers

    def message(self, topic: str, msg) -> None:
        self.handlers[topic](msg)

    def due(self, stamp: float | None) -> bool:
        """Whether a frame at `stamp` is a model step (then its messages are worth decoding)."""
        return stamp is not None and (self.inputs.route is None or self.pipeline.due(stamp, self.inputs.route))

    def try_step(self) -> None:
        frame = self.inputs.frame(wall_now=0.0, tolerance=OBJECTS_TOLERANCE)
        if frame is None or self.inputs.problem(wall_now=0.0, timeout=float('inf')) is not None:
            return
        step = self.pipeline.step(frame, self.inputs.scene(), self.control)
        if step is not None:
            self.on_step(step)

    def on_step(self, step: Step) -> None:
        raise NotImplementedError

    def _on_control(self, msg) -> None:
        self.control = (msg.throttle, msg.steer, msg.brake)


def read_drive(bag, drive: RecordedDrive, notes: list, seen: collections.Counter) -> tuple[float, dict] | None:
    """Feeds every message of `bag` that `drive` wants, in recording order. Returns (seconds recorded,
    topic -> type) or None when the bag cannot be opened; what was skipped and why goes into `notes`,
    message counts per topic into `seen`."""
    source = open_bag(bag, notes)
    if source is None:
        return None
    topics, bag_seconds, messages, count = source
    for topic in NEEDED:
        if topic.replace('ego_vehicle', drive.role) not in topics:
            notes.append(f'{topic} is not in the bag: no Scene can be built without it')
    wanted = {topic: msgtype for topic, msgtype in topics.items() if drive.wants(topic)}
    store = typestore_with(set(wanted.values()))
    classes, skipped = {}, {topic: f'not used by {drive.purpose}' for topic in topics if topic not in wanted}
    for topic, msgtype in wanted.items():
        if msgtype in store.fielddefs:
            classes[topic] = msgtype
        else:
            skipped[topic] = f'type {msgtype} is not installed'
    notes += [f'skipped {topic}: {why}' for topic, why in sorted(skipped.items())]

    def decode(topic, data):
        try:
            return store.deserialize_cdr(data, classes[topic])
        except Exception as exc:   # one corrupt message does not end the reading
            seen[f'{topic} (undecodable)'] += 1
            if seen[f'{topic} (undecodable)'] == 1:
                notes.append(f'{topic}: a message could not be decoded ({exc}); such messages skipped')
            return None

    pending: dict[str, bytes] = {}
    try:
        # a progress bar on a terminal (long recordings take minutes); nothing when output goes to a file
        for topic, data in tqdm(messages, total=count, unit='msg', desc=drive.label, disable=None, leave=False):
            if topic not in classes:
                continue
            seen[topic] += 1
            if topic in drive.lazy:
                pending[topic] = data
                continue
            if topic == drive.odometry and not drive.due(header_stamp(data)):
                continue   # a frame between two model steps: its odometry need not be decoded either
            msg = decode(topic, data)
            if msg is None:
                continue
            drive.message(topic, msg)
            if topic == drive.odometry and drive.due(drive.inputs.ego_stamp):
                for lazy_topic in sorted(pending):   # the bridge sends objects and status before odometry
                    decoded = decode(lazy_topic, pending.pop(lazy_topic))
                    if decoded is not None:
                        drive.message(lazy_topic, decoded)
                drive.try_step()
    except Exception as exc:   # a truncated or damaged file: keep what was read
        notes.append(f'the bag ends early or is damaged ({type(exc).__name__}: {exc}); used what came before')
    return bag_seconds, topics


def header_stamp(data: bytes) -> float | None:
    """The header stamp of a serialized message that starts with a std_msgs/Header (s), read from the CDR
    bytes without decoding the message; None when the bytes are too short."""
    if len(data) < 12:
        return None
    sec, nanosec = struct.unpack_from('<iI' if data[1] == 1 else '>iI', data, 4)   # byte 1: 1 = little endian
    return sec + nanosec * 1e-9


def open_bag(bag, notes):
    """(topic -> type, seconds, iterator of (topic, serialized bytes), message count) through rosbags; for an
    MCAP whose end is missing (a recording cut short) by streaming its records from the start; None if neither
    works."""
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
        return stream_mcap(mcaps[0], notes)

    def messages():
        with contextlib.closing(reader):
            for conn, _, data in reader.messages():
                yield conn.topic, bytes(data)
    seconds = reader.duration / 1e9 if reader.message_count else 0.0
    return {c.topic: c.msgtype for c in reader.connections}, seconds, messages(), reader.message_count


def stream_mcap(path: Path, notes):
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
    return topics, seconds, ((topic, data) for _, topic, data in records), len(records)
