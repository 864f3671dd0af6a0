"""AdaWM: adaptive world-model planning for autonomous driving, as ROS 2 nodes."""

__version__ = '0.1.0'
