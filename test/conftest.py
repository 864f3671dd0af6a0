"""Test-wide guards: DDS stays on loopback in a domain of this run's own, whatever the caller set."""
import os
import random

# Set before anything imports rclpy: Fast DDS reads these when the first context starts.
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ.setdefault('ROS_DOMAIN_ID', str(random.randint(1, 100)))
