"""QoS profiles matching carla-ros-bridge's publishers, so the stack talks to the real bridge and the
embedded one alike.

Subscriptions to streams use best effort (compatible with both reliable and best-effort publishers; not
BEST_AVAILABLE, which settles once, when the subscription is made: made before any publisher exists, it
picks reliable and then never matches a best-effort one, e.g. a rosbag player — measured in test_bag);
latched topics (map, world info, route, vehicle info) are transient local on both sides so a node that
starts late still gets them.
"""
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

# publishers of the embedded bridge: what carla-ros-bridge offers
STREAM = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                    durability=DurabilityPolicy.VOLATILE)
LATCHED = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)

# subscriptions of the planner and adaptation nodes. Depth: a second of 20 Hz frames, so a node starved of
# CPU for a moment still gets every frame and answers it (late) instead of losing it from its queue
SENSOR_IN = QoSProfile(depth=20, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT,
                       durability=DurabilityPolicy.VOLATILE)
# a listener that counts every frame and command (the monitor): minutes of them, so it never loses one to
# its own starvation and miscounts the stack's
COUNT_IN = QoSProfile(depth=2000, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.VOLATILE)
LATCHED_IN = LATCHED
EVENTS_IN = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.VOLATILE)
