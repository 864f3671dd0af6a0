"""The stack monitor's frame coverage: counted from the first frame the planner answered."""
import pytest

pytestmark = pytest.mark.ros


def test_coverage_counts_from_the_first_answered_frame():
    import rclpy
    from rclpy.context import Context

    from adawm_planner.nodes.monitor import StackMonitor

    context = Context()
    rclpy.init(context=context)
    try:
        monitor = StackMonitor(context=context)
        assert monitor.command_coverage() == 0.0
        monitor.frame_stamps = [0.05 * i for i in range(1, 41)]           # 2 s of frames
        # a safe stop stamped 0.0 before the planner was up, then every frame from 1.0 s on but one
        monitor.command_stamps = [0.0] + [s for s in monitor.frame_stamps[19:] if abs(s - 1.5) > 1e-9]
        assert monitor.command_coverage() == pytest.approx(20 / 21)
        assert monitor.command_coverage(since=1.6) == pytest.approx(1.0)
        monitor.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
