"""The stack monitor's frame coverage: counted from the planner's first answer once it is up."""
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

pytestmark = pytest.mark.ros


def test_coverage_counts_from_the_planners_first_answer_once_up():
    import rclpy
    from rclpy.context import Context

    from adawm_planner.nodes.monitor import StackMonitor

    context = Context()
    rclpy.init(context=context)
    try:
        monitor = StackMonitor(context=context)
        assert monitor.command_coverage() == 0.0
        frames = [round(0.05 * i, 3) for i in range(0, 41)]              # sim 0 .. 2 s
        monitor.frame_stamps = frames[:17]                                # up to 0.8 s when the planner reports
        monitor._on_diagnostics(DiagnosticArray(status=[DiagnosticStatus(name='adawm/planner')]))
        monitor.frame_stamps = frames
        # a safe stop stamped 0.0 (no map yet; 0.0 is also the first frame), then answers from 1.0 s on, one
        # missing; frames 0.85 .. 0.95 (map and hold after start-up) are not counted against the planner
        monitor.command_stamps = [0.0] + [s for s in frames[20:] if s != 1.5]
        assert monitor.planner_up_at == 0.8 and monitor.first_answer() == 1.0
        assert monitor.command_coverage() == pytest.approx(20 / 21)
        assert monitor.command_coverage(since=1.6) == pytest.approx(1.0)
        monitor.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
