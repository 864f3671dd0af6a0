"""`adawm record` / `adawm replay`: rosbag2 folders (metadata.yaml + MCAP) that `ros2 bag` also reads.

Recording subscribes with raw=True and writes the serialized bytes as they arrived, stamped with the
time they were received (system time, as `ros2 bag record` does by default; /clock is recorded like any
other topic when the simulator publishes it). Each
topic is subscribed with the durability its publishers offer, so latched topics (map, route, vehicle info)
are caught even when they were published before the recorder started (and on replay, a latched message
— a new route — is acknowledged by its subscribers, ≤ 0.5 s, before the frames after it go out). Replay publishes the same bytes
with the original spacing (scaled by --rate) and drives /clock from the bag's timestamps, so nodes with
use_sim_time run on recorded data exactly as live.
"""
from __future__ import annotations

import contextlib
import importlib
import sys
import time
from pathlib import Path

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosgraph_msgs.msg import Clock

# What a drive of the stack is made of: carla-ros-bridge's topics for role `ego_vehicle` and AdaWM's own.
DEFAULT_TOPICS = (
    '/clock', '/carla/map', '/carla/world_info', '/carla/status',
    '/carla/ego_vehicle/odometry', '/carla/ego_vehicle/objects', '/carla/ego_vehicle/waypoints',
    '/carla/ego_vehicle/vehicle_status', '/carla/ego_vehicle/vehicle_info', '/carla/ego_vehicle/collision',
    '/carla/ego_vehicle/speedometer', '/carla/ego_vehicle/vehicle_control_cmd',
    '/adawm/mismatch', '/adawm/adapter_status', '/adawm/episode', '/diagnostics',
)


def _refuse(command: str, message: str) -> int:
    """One line on stderr, exit code 2: the command line's refusals."""
    print(f'adawm {command}: {message}', file=sys.stderr)
    return 2


def message_class(type_name: str):
    """'pkg/msg/Name' -> the generated Python class."""
    package, _, name = type_name.split('/')
    return getattr(importlib.import_module(f'{package}.msg'), name)


def typestore_with(type_names: set[str]):
    """A Kilted typestore that also knows the interface packages it lacks (carla_msgs, adawm_msgs, ...),
    read from the .msg files the packages install under share/."""
    from adawm_planner.share import find_package_share

    store = get_typestore(Stores.ROS2_KILTED)
    missing_packages = {name.split('/')[0] for name in type_names if name not in store.fielddefs}
    for package in sorted(missing_packages):
        types = {}
        try:
            share = find_package_share(package)
        except LookupError:
            continue   # not installed here: its types stay unknown to the store (callers check fielddefs)
        for msg_file in sorted((share / 'msg').glob('*.msg')):
            types.update(get_types_from_msg(msg_file.read_text(), f'{package}/msg/{msg_file.stem}'))
        store.register(types)
    return store


def _bag_qos(profile: QoSProfile) -> Qos:
    durable = profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
    reliable = profile.reliability == ReliabilityPolicy.RELIABLE
    never = QosTime(0x7FFFFFFF, 0xFFFFFFFF)
    return Qos(QosHistory.KEEP_LAST, max(profile.depth, 1),
               QosReliability.RELIABLE if reliable else QosReliability.BEST_EFFORT,
               QosDurability.TRANSIENT_LOCAL if durable else QosDurability.VOLATILE,
               never, never, QosLiveliness.AUTOMATIC, never, False)


class Recorder(Node):
    def __init__(self, out: Path, topics: list[str]):
        super().__init__('adawm_recorder')
        self.wanted = set(topics)
        self.out = out
        self.writer: Writer | None = None
        self.connections = {}
        self.counts: dict[str, int] = {}
        self.typestore = None
        self.create_timer(0.2, self._discover)
        self._discover()

    def _discover(self) -> None:
        for topic, types in self.get_topic_names_and_types():
            if topic not in self.wanted or topic in self.connections or not types:
                continue
            offered = [info.qos_profile for info in self.get_publishers_info_by_topic(topic)]
            if not offered:
                continue
            durable = any(q.durability == DurabilityPolicy.TRANSIENT_LOCAL for q in offered)
            reliable = all(q.reliability == ReliabilityPolicy.RELIABLE for q in offered)
            qos = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST,
                             reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL if durable else DurabilityPolicy.VOLATILE)
            type_name = types[0]
            try:
                cls = message_class(type_name)
            except (ImportError, AttributeError, ValueError):
                self.get_logger().warning(f'not recording {topic}: message type {type_name} is not installed')
                self.connections[topic] = None
                continue
            if self.writer is None:
                self.writer = Writer(self.out, version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin.MCAP)
                self.writer.open()
            self.typestore = typestore_with({type_name})
            self.connections[topic] = self.writer.add_connection(
                topic, type_name, typestore=self.typestore, offered_qos_profiles=[_bag_qos(offered[0])])
            self.counts[topic] = 0
            self.create_subscription(cls, topic, lambda data, t=topic: self._write(t, data), qos, raw=True)
            self.get_logger().info(f'recording {topic} ({type_name})')

    def _write(self, topic: str, data: bytes) -> None:
        self.writer.write(self.connections[topic], self.get_clock().now().nanoseconds, data)
        self.counts[topic] += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def record(out: str | Path, topics: list[str] | None = None, duration_s: float | None = None) -> int:
    out = Path(out)
    if out.exists():
        return _refuse('record', f'{out} exists; choose a new folder (rosbag2 writes a fresh one)')
    rclpy.init()
    recorder = Recorder(out, list(topics or DEFAULT_TOPICS))
    executor = SingleThreadedExecutor()
    executor.add_node(recorder)
    deadline = None if duration_s is None else time.monotonic() + duration_s
    try:
        while rclpy.ok() and (deadline is None or time.monotonic() < deadline):
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        recorder.close()
        total = sum(recorder.counts.values())
        print(f'adawm record: {total} messages on {len(recorder.counts)} topics -> {out}')
        for topic, count in sorted(recorder.counts.items()):
            print(f'  {topic}: {count}')
        recorder.destroy_node()
        rclpy.try_shutdown()
    return 0 if recorder.writer is not None else 1


def replay(bag: str | Path, rate: float = 1.0, loop: bool = False, topics: list[str] | None = None,
           wait_for_subscribers: float = 0.5) -> int:
    """Publishes the recording with its timing. Before the first message it waits until a subscriber is
    matched on one of the replayed topics, at most `wait_for_subscribers` seconds (discovery takes longer on a
    loaded machine; nobody listening is fine too, e.g. a recorder elsewhere)."""
    if rate <= 0:
        return _refuse('replay', '--rate must be positive')
    if wait_for_subscribers < 0:
        return _refuse('replay', '--wait-for-subscribers must not be negative')
    try:
        reader = Reader(bag)
        reader.open()
    except Exception as exc:   # rosbags raises several unrelated types for unreadable bags
        return _refuse('replay', f'cannot read {bag}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}')
    rclpy.init()
    node = rclpy.create_node('adawm_replay')
    try:
        with contextlib.closing(reader):
            publishers, skipped, latched = {}, [], set()
            for conn in reader.connections:
                if topics is not None and conn.topic not in topics:
                    continue
                try:
                    cls = message_class(conn.msgtype)
                except (ImportError, AttributeError, ValueError):
                    skipped.append(f'{conn.topic} ({conn.msgtype}: not installed)')
                    continue
                durable = any(q.durability == QosDurability.TRANSIENT_LOCAL for q in conn.ext.offered_qos_profiles)
                qos = QoSProfile(depth=100, durability=DurabilityPolicy.TRANSIENT_LOCAL if durable
                                 else DurabilityPolicy.VOLATILE)
                publishers[conn.id] = node.create_publisher(cls, conn.topic, qos)
                if durable:
                    latched.add(conn.id)
            for line in skipped:
                print(f'adawm replay: skipping {line}')
            has_clock = any(c.topic == '/clock' for c in reader.connections if c.id in publishers)
            clock_pub = None if has_clock else node.create_publisher(Clock, '/clock', 10)
            deadline = time.monotonic() + wait_for_subscribers
            while (time.monotonic() < deadline and
                   not any(p.get_subscription_count() for p in publishers.values())):
                time.sleep(0.05)
            while True:
                start_wall, start_bag = time.monotonic(), None
                for conn, stamp, data in reader.messages():
                    start_bag = stamp if start_bag is None else start_bag
                    delay = (stamp - start_bag) / 1e9 / rate - (time.monotonic() - start_wall)
                    if delay > 0:
                        time.sleep(delay)
                    if clock_pub is not None:
                        clock_pub.publish(Clock(clock=rclpy.time.Time(nanoseconds=stamp).to_msg()))
                    if conn.id in publishers:
                        publishers[conn.id].publish(bytes(data))
                        if conn.id in latched:   # a route or map: delivered before the frames that follow
                            waited = time.monotonic()
                            publishers[conn.id].wait_for_all_acked(rclpy.duration.Duration(seconds=0.5))
                            start_wall += time.monotonic() - waited   # the schedule waits too: no burst after
                if not loop:
                    break
            # the last messages are still in flight when the loop ends: exiting now would drop them
            for publisher in publishers.values():
                publisher.wait_for_all_acked(rclpy.duration.Duration(seconds=2.0))
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
