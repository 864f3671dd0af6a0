"""Thin rclpy nodes: messages <-> core types, timers, parameters, QoS."""
