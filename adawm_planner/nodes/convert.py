"""carla-ros-bridge messages <-> the core's types: the only place the nodes touch message fields.

Scene -> messages (the embedded bridge): `*_msg` builders with the bridge's frames and conventions.
Messages -> Scene (planner, adaptation, analysis): InputState keeps the latest of each input as plain
numbers, says when a simulation frame is complete and whether it can be trusted (`problem`), and builds the
Scene that core's StepPipeline turns into model steps — the same Scene the embedded simulator builds from its
own state, so the planner sees in ROS exactly what the model saw in training (test_sim_node_equivalence
holds the two paths together).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import rclpy.subscription

from builtin_interfaces.msg import Time
from derived_object_msgs.msg import Object, ObjectArray
from geometry_msgs.msg import PoseStamped, Quaternion
from nav_msgs.msg import Odometry, Path as PathMsg
from shape_msgs.msg import SolidPrimitive

from adawm_planner.core.opendrive import lanes_from_opendrive
from adawm_planner.core.scene import Agents, Ego, Scene
from adawm_planner.share import package_share

WITH_MESSAGE_INFO = hasattr(rclpy.subscription, 'MessageInfo')   # rclpy ≥ Iron: callbacks may take message info

MAX_OBJECTS = 256          # more than any real scene holds near the ego; a larger array is cut, nearest kept
MAX_ABS_COORDINATE = 1e6   # m; beyond this a position is garbage, not a place
MAX_SPEED = 100.0          # m/s
MAX_OBJECT_SIZE = 100.0    # m; no road user is longer or wider


def time_msg(seconds: float) -> Time:
    sec, nanosec = divmod(round(seconds * 1e9), 1_000_000_000)   # integer arithmetic: no 2.999… -> 2.0
    return Time(sec=int(sec), nanosec=int(nanosec))


def time_from_ns(nanoseconds: int) -> Time:
    return Time(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def quaternion_from_yaw(yaw: float) -> Quaternion:
    return Quaternion(x=0.0, y=0.0, z=math.sin(yaw / 2), w=math.cos(yaw / 2))


# ---- Scene -> messages ------------------------------------------------------------------------------------
def odometry_msg(ego: Ego, stamp: float, role: str) -> Odometry:
    msg = Odometry()
    msg.header.stamp, msg.header.frame_id, msg.child_frame_id = time_msg(stamp), 'map', role
    msg.pose.pose.position.x, msg.pose.pose.position.y = float(ego.x), float(ego.y)
    msg.pose.pose.orientation = quaternion_from_yaw(float(ego.yaw))
    msg.twist.twist.linear.x = float(ego.speed)   # body frame, as the bridge publishes the ego's twist
    return msg


def objects_msg(agents: Agents, stamp: float) -> ObjectArray:
    msg = ObjectArray()
    msg.header.stamp, msg.header.frame_id = time_msg(stamp), 'map'
    for i in range(len(agents)):
        obj = Object(id=int(i + 2), detection_level=Object.OBJECT_TRACKED, object_classified=True,
                     classification=Object.CLASSIFICATION_CAR, classification_certainty=255)
        obj.header = msg.header
        obj.pose.position.x, obj.pose.position.y = float(agents.x[i]), float(agents.y[i])
        obj.pose.orientation = quaternion_from_yaw(float(agents.yaw[i]))
        obj.twist.linear.x, obj.twist.linear.y = float(agents.vx[i]), float(agents.vy[i])   # map frame
        obj.shape = SolidPrimitive(type=SolidPrimitive.BOX,
                                   dimensions=[float(agents.length[i]), float(agents.width[i]), 1.5])
        msg.objects.append(obj)
    return msg


# ---- the planner's command, in the form the stack downstream takes ---------------------------------------
OUTPUTS = {   # output kind -> (message type, default topic; ROLE is the ego's role name)
    'carla': ('carla_msgs/msg/CarlaEgoVehicleControl', '/carla/ROLE/vehicle_control_cmd'),
    'autoware': ('autoware_control_msgs/msg/Control', '/control/command/control_cmd'),
    'ackermann': ('ackermann_msgs/msg/AckermannDriveStamped', '/ackermann_cmd'),
}


def output_type(kind: str):
    package, _, name = OUTPUTS[kind][0].split('/')
    import importlib
    return getattr(importlib.import_module(f'{package}.msg'), name)


def command_msg(kind: str, command: dict, speed: float, table, dt: float, stamp, stop: bool = False):
    """A control (throttle / steer / brake) as the output kind's message. For Autoware and Ackermann the
    action goes through the checkpoint's vehicle model (ActionTable.kinematics): target speed after one model
    step, acceleration, front-tire angle (+ = left); a safe stop (`stop`) asks for speed 0 at full braking."""
    if kind == 'carla':
        from carla_msgs.msg import CarlaEgoVehicleControl
        msg = CarlaEgoVehicleControl(throttle=float(command['throttle']), steer=float(command['steer']),
                                     brake=float(command['brake']))
        msg.header.stamp = stamp
        return msg
    acceleration, target_speed, tire_angle = table.kinematics(command, speed, dt)
    if stop:
        target_speed = 0.0
    msg = output_type(kind)()
    if kind == 'autoware':
        msg.stamp = msg.lateral.stamp = msg.longitudinal.stamp = stamp
        msg.lateral.steering_tire_angle = tire_angle
        msg.longitudinal.velocity, msg.longitudinal.acceleration = target_speed, acceleration
        msg.longitudinal.is_defined_acceleration = True
    else:   # Ackermann: acceleration is a magnitude; the target speed says which way
        msg.header.stamp = stamp
        msg.drive.steering_angle, msg.drive.speed, msg.drive.acceleration = tire_angle, target_speed, abs(acceleration)
    return msg


def control_of_msg(kind: str, msg, speed: float, table, dt: float) -> tuple[float, float, float]:
    """The (throttle, steer, brake) a command message asks for (the inverse of `command_msg`)."""
    if kind == 'carla':
        return msg.throttle, msg.steer, msg.brake
    if kind == 'autoware':
        lon = msg.longitudinal
        acceleration = lon.acceleration if lon.is_defined_acceleration else (lon.velocity - speed) / dt
        control = table.control_of(acceleration, msg.lateral.steering_tire_angle)
    else:
        sign = 1.0 if msg.drive.speed > speed + 1e-6 else -1.0 if msg.drive.speed < speed - 1e-6 else 0.0
        control = table.control_of(sign * abs(msg.drive.acceleration), msg.drive.steering_angle)
    return control['throttle'], control['steer'], control['brake']


def plan_markers_msg(paths: np.ndarray, best: int, stamp_ns: int):
    """The candidates' paths (K, H+1, 2) as line strips in the map frame; the chosen one bold and green."""
    from geometry_msgs.msg import Point
    from visualization_msgs.msg import Marker, MarkerArray
    markers = MarkerArray()
    for i, path in enumerate(paths):
        m = Marker(ns='adawm_candidates', id=i, type=Marker.LINE_STRIP, action=Marker.ADD)
        m.header.frame_id, m.header.stamp = 'map', time_from_ns(stamp_ns)
        m.scale.x = 0.3 if i == best else 0.08
        m.color.r, m.color.g, m.color.b, m.color.a = (0.1, 0.9, 0.2, 1.0) if i == best else (0.6, 0.6, 0.9, 0.35)
        m.points = [Point(x=float(x), y=float(y), z=0.2) for x, y in path]
        markers.markers.append(m)
    return markers


def image_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str):
    from sensor_msgs.msg import Image
    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding='rgb8', step=rgb.shape[1] * 3, data=rgb.tobytes())
    msg.header.stamp = time_from_ns(stamp_ns)
    msg.header.frame_id = frame_id
    return msg


def diagnostics_msg(name: str, hardware_id: str, warn: bool, message: str, values: dict, stamp_ns: int):
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    status = DiagnosticStatus(name=name, hardware_id=hardware_id, message=message,
                              level=DiagnosticStatus.WARN if warn else DiagnosticStatus.OK,
                              values=[KeyValue(key=k, value=v) for k, v in values.items()])
    array = DiagnosticArray(status=[status])
    array.header.stamp = time_from_ns(stamp_ns)
    return array


def adapter_status_msg(target: str, version: int, state: int, reason: str, stamp_ns: int, adapter=None,
                       trainable_fraction: float = 0.0):
    """adawm_msgs/AdapterStatus of an adapter (a core.lora.Adapter, when there is one to describe)."""
    from adawm_msgs.msg import AdapterStatus
    msg = AdapterStatus(version=version, state=state, reason=reason, trainable_fraction=float(trainable_fraction),
                        target=AdapterStatus.TARGET_MODEL if target == 'model' else AdapterStatus.TARGET_POLICY)
    msg.header.stamp = time_from_ns(stamp_ns)
    if adapter is not None:
        msg.rank, msg.trainable_parameters, msg.sha256 = adapter.meta.rank, adapter.parameter_count, adapter.sha256
    return msg


def route_msg(route: np.ndarray, stamp: float) -> PathMsg:
    msg = PathMsg()
    msg.header.frame_id, msg.header.stamp = 'map', time_msg(stamp)
    for x, y in route:
        pose = PoseStamped()
        pose.header = msg.header
        pose.pose.position.x, pose.pose.position.y = float(x), float(y)
        pose.pose.orientation.w = 1.0
        msg.poses.append(pose)
    return msg


# ---- messages -> Scene ------------------------------------------------------------------------------------
def yaw_from_quaternion(q) -> float:
    return math.atan2(2.0 * (q.w * q.z + q.x * q.y), 1.0 - 2.0 * (q.y * q.y + q.z * q.z))


def stamp_seconds(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def signing_key(node, key_file: str) -> bytes:
    """The adapter signing key from a file (kept out of parameters, which anyone on the graph can read): the
    given one, or the per-user key, created on first use. A node that cannot have it does not start."""
    from adawm_planner.core import lora
    path = Path(key_file) if key_file else lora.default_key_file()
    try:
        key, created = lora.load_or_create_key(path)
    except (OSError, lora.AdapterError) as exc:
        raise SystemExit(f'{node.get_name()}: cannot read or create the adapter key {path}: {exc}') from None
    node.get_logger().info(f'adapters are signed with the key in {path}' + (' (created now)' if created else ''))
    return key


def default_checkpoint() -> str:
    """The shipped checkpoint: the first under the package's checkpoints/ (venv, colcon install or checkout)."""
    candidates = sorted((package_share() / 'checkpoints').glob('*/model.json'))
    return str(candidates[0].parent) if candidates else ''


class InputState:
    """Latest inputs, as numbers. Callbacks store; `frame` says when a simulation frame is complete;
    `problem` judges whether the inputs can be trusted; `scene` assembles."""

    def __init__(self):
        self.lanes = None            # list of (centre (N, 2), width)
        self.map_error = ''
        self.route = None            # (M, 2)
        self.ego = None              # dict x, y, yaw, speed
        self.ego_stamp = self.objects_stamp = None   # sim time of the latest odometry / objects
        self.received_wall = None    # monotonic wall time the latest complete frame arrived
        self.agents = np.zeros((0, 7))   # x, y, yaw, vx, vy, length, width
        self.acceleration = 0.0      # m/s², from vehicle_status
        self.status_stamp = None     # sim time of the latest vehicle_status; None if the topic is silent
        self.collided = False
        self.bad_input = ''
        self.done_stamp = None       # the last frame handed out by `frame`
        self.time_jumped_back = False
        self.source = None           # (topic, publisher gid) of the message being stored, where rclpy tells
        self.fault = None            # (reason, source) of the last untrustworthy input, until `take_fault`

    def _refuse(self, reason: str) -> None:
        self.bad_input, self.fault = reason, (reason, self.source)

    def take_fault(self):
        """(reason, (topic, publisher gid) or None) of an input refused since the last call, or None."""
        fault, self.fault = self.fault, None
        return fault

    # ---- callbacks -------------------------------------------------------------------------------------
    def on_map(self, msg) -> None:
        try:
            self.lanes, self.map_error = lanes_from_opendrive(msg.data), ''
        except ValueError as exc:
            self.lanes, self.map_error = None, f'map unusable: {exc}'

    def on_route(self, msg) -> None:
        points = np.array([[p.pose.position.x, p.pose.position.y] for p in msg.poses], dtype=np.float64)
        if len(points) < 2 or not np.isfinite(points).all() or np.abs(points).max() > MAX_ABS_COORDINATE:
            self._refuse(f'route has {len(points)} points or non-finite / absurd coordinates')
            return
        self.route = points

    def on_odometry(self, msg) -> None:
        p, v = msg.pose.pose.position, msg.twist.twist.linear
        yaw = yaw_from_quaternion(msg.pose.pose.orientation)
        speed = math.hypot(v.x, v.y)   # the bridge gives the ego's twist in its body frame
        stamp = stamp_seconds(msg.header.stamp)
        if not all(math.isfinite(x) for x in (p.x, p.y, yaw, speed, stamp)) \
                or max(abs(p.x), abs(p.y)) > MAX_ABS_COORDINATE or speed > MAX_SPEED:
            self._refuse(f'odometry not finite or absurd (x={p.x}, y={p.y}, speed={speed})')
            return
        if self.ego_stamp is not None and stamp < self.ego_stamp - 1e-6:
            self.time_jumped_back = True   # simulator reset: the latent state must start over
            self.fault = ('simulation time jumped back', self.source)
            self.done_stamp = None
        self.ego, self.ego_stamp, self.bad_input = {'x': p.x, 'y': p.y, 'yaw': yaw, 'speed': speed}, stamp, ''

    def on_objects(self, msg) -> None:
        rows = []
        for obj in msg.objects:
            dims = list(obj.shape.dimensions) + [4.5, 2.0]
            pos, vel = obj.pose.position, obj.twist.linear
            rows.append((pos.x, pos.y, yaw_from_quaternion(obj.pose.orientation), vel.x, vel.y, dims[0], dims[1]))
        agents = np.array(rows, dtype=np.float64).reshape(-1, 7)
        sane = (np.isfinite(agents).all(axis=1) & (np.abs(agents[:, :2]).max(axis=1, initial=0) < MAX_ABS_COORDINATE)
                & (agents[:, 5:7] >= 0).all(axis=1) & (agents[:, 5:7] <= MAX_OBJECT_SIZE).all(axis=1))
        agents = agents[sane]
        if len(agents) > MAX_OBJECTS and self.ego is not None:
            distance = np.hypot(agents[:, 0] - self.ego['x'], agents[:, 1] - self.ego['y'])
            agents = agents[np.argsort(distance)[:MAX_OBJECTS]]
        self.agents, self.objects_stamp = agents[:MAX_OBJECTS], stamp_seconds(msg.header.stamp)

    def on_collision(self, msg) -> None:
        self.collided = True

    def on_vehicle_status(self, msg) -> None:
        if math.isfinite(msg.acceleration.linear.x):
            self.acceleration = float(msg.acceleration.linear.x)
            self.status_stamp = stamp_seconds(msg.header.stamp)

    def frame(self, wall_now: float, tolerance: float = 1e-6) -> float | None:
        """The sim time of a newly completed frame (odometry, objects and — where published — vehicle
        status of the same stamp, within `tolerance` s), else None. Waiting for all of them makes what the
        planner sees independent of the order callbacks happen to run in."""
        stamp = self.ego_stamp
        if stamp is None or self.objects_stamp is None or abs(stamp - self.objects_stamp) > tolerance:
            return None
        if self.status_stamp is not None and abs(stamp - self.status_stamp) > tolerance:
            return None   # vehicle_status is part of the frame once it has been heard at all
        if self.done_stamp is not None and stamp <= self.done_stamp:
            return None
        self.done_stamp, self.received_wall = stamp, wall_now
        return stamp

    # ---- judgement -------------------------------------------------------------------------------------
    def age(self, wall_now: float) -> float:
        return float('inf') if self.received_wall is None else wall_now - self.received_wall

    def problem(self, wall_now: float, timeout: float) -> str | None:
        """Why the inputs cannot be trusted right now, or None."""
        if self.map_error:
            return self.map_error
        if self.lanes is None:
            return 'no map received on /carla/map'
        if self.route is None:
            return 'no route received on waypoints'
        if self.bad_input:
            return self.bad_input
        if self.received_wall is None:
            return 'no odometry + objects frame received'
        if self.time_jumped_back:
            self.time_jumped_back = False
            return 'simulation time jumped back (simulator reset)'
        if self.age(wall_now) > timeout:
            return f'inputs are stale ({self.age(wall_now):.2f} s since the last frame, limit {timeout:.2f} s)'
        return None

    def scene(self) -> Scene:
        """The latest frame as a Scene; its collision flag reports collision events since the last call."""
        e = self.ego
        collision, self.collided = self.collided, False
        return Scene(lanes=self.lanes, route=self.route,
                     ego=Ego(e['x'], e['y'], e['yaw'], e['speed'], self.acceleration),
                     agents=Agents.from_rows(self.agents), collision=collision)


def publisher_name(node, source) -> str:
    """'/namespace/node' of the publisher a (topic, gid) source names, from the graph; '' when unknown."""
    if source is None:
        return ''
    topic, gid = source
    for info in node.get_publishers_info_by_topic(topic):
        if bytes(info.endpoint_gid) == gid:
            return f'{info.node_namespace.rstrip("/")}/{info.node_name}'
    return ''


def crowded_inputs(node, role: str) -> dict[str, int]:
    """Input topics with more than one publisher (topic -> count): a sign of a second source on the graph."""
    topics = ['/carla/map'] + [f'/carla/{role}/{t}' for t in ('waypoints', 'odometry', 'objects', 'vehicle_status')]
    return {t: n for t in topics if (n := node.count_publishers(t)) > 1}


def subscribe_inputs(node, inputs: 'InputState', role: str, on_frame_input) -> None:
    """The bridge topics a Scene is built from, the same for every node that builds one.
    `on_frame_input(store, msg)` handles the streams that make up a frame (odometry, objects, status)."""
    from carla_msgs.msg import CarlaCollisionEvent, CarlaEgoVehicleStatus
    from std_msgs.msg import String

    from adawm_planner.nodes import qos
    ns = f'/carla/{role}'

    def sourced(topic, handle):
        """The callback for `topic`: tells `inputs` which publisher sent the message (rclpy ≥ Iron hands
        callbacks of two parameters the message info; on Humble the source stays unknown)."""
        if not WITH_MESSAGE_INFO:
            return handle

        def callback(msg, info):
            inputs.source = (topic, bytes(info['publisher_gid']['data'])) if info.get('publisher_gid') else None
            handle(msg)
        return callback

    # map and route first: when a new episode's route and first frame are ready together, the executor
    # (which serves subscriptions in creation order) takes the route first, live and on replay alike
    node.create_subscription(PathMsg, f'{ns}/waypoints', sourced(f'{ns}/waypoints', inputs.on_route), qos.LATCHED_IN)
    node.create_subscription(String, '/carla/map', inputs.on_map, qos.LATCHED_IN)
    for msg_type, topic, store in ((Odometry, 'odometry', inputs.on_odometry), (ObjectArray, 'objects', inputs.on_objects),
                                   (CarlaEgoVehicleStatus, 'vehicle_status', inputs.on_vehicle_status)):
        node.create_subscription(msg_type, f'{ns}/{topic}',
                                 sourced(f'{ns}/{topic}', lambda m, store=store: on_frame_input(store, m)),
                                 qos.SENSOR_IN)
    node.create_subscription(CarlaCollisionEvent, f'{ns}/collision', inputs.on_collision, qos.EVENTS_IN)
