"""A second ROS process for the plumbing tests: `python ros_peer.py ROLE`.

Roles:
  publish-control   publishes carla_msgs/CarlaEgoVehicleControl and adawm_msgs/MismatchReport until
                    killed, one of each per 50 ms, counting up in the fields the test checks.
  param-node        a node with a parameter `planning_horizon` whose on_set_parameters callback
                    rejects values outside 1..64 with a reason; prints READY once spinning.
"""
import sys

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rcl_interfaces.msg import SetParametersResult


def publish_control() -> None:
    from adawm_msgs.msg import MismatchReport
    from carla_msgs.msg import CarlaEgoVehicleControl

    node = Node('plumbing_publisher')
    control_pub = node.create_publisher(CarlaEgoVehicleControl, '/carla/ego_vehicle/vehicle_control_cmd', 10)
    report_pub = node.create_publisher(MismatchReport, '/adawm/mismatch', 10)
    count = 0

    def tick():
        nonlocal count
        count += 1
        control = CarlaEgoVehicleControl()
        control.header.stamp = node.get_clock().now().to_msg()
        control.throttle = 0.5
        control.steer = -0.25
        control.brake = 0.0
        control.gear = count
        control_pub.publish(control)
        report = MismatchReport()
        report.header.stamp = control.header.stamp
        report.model_mismatch = 0.4
        report.policy_mismatch = 0.1
        report.threshold_c = 2.0
        report.decision = MismatchReport.DECISION_UPDATE_POLICY
        report.finetune_step = count
        report_pub.publish(report)

    node.create_timer(0.05, tick)
    rclpy.spin(node)


def param_node() -> None:
    node = Node('plumbing_param_node')
    node.declare_parameter('planning_horizon', 15)

    def validate(params):
        for p in params:
            if p.name == 'planning_horizon' and not 1 <= p.value <= 64:
                return SetParametersResult(successful=False, reason=f'planning_horizon must be in 1..64, got {p.value}')
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(validate)
    print('READY', flush=True)
    rclpy.spin(node)


if __name__ == '__main__':
    rclpy.init()
    try:
        {'publish-control': publish_control, 'param-node': param_node}[sys.argv[1]]()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        rclpy.try_shutdown()
