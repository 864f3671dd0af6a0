"""The adaptation node's progress on /adawm/adaptation_progress — what a lockstep bridge waits on
(sim_bridge_node's wait_for_adaptation) — as a diagnostic_msgs/DiagnosticStatus with named values."""
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

TOPIC = '/adawm/adaptation_progress'


def progress_msg(frame: float | None, requested: int, skipped: int, finished: int, unsettled: int) -> DiagnosticStatus:
    """The newest frame taken (sim time, -1 before the first) and the finetuning steps requested / skipped /
    finished, the rollback verdicts not yet acted on, and the sum of the work outstanding (`pending`)."""
    values = {'frame': f'{frame if frame is not None else -1.0:.6f}', 'requested': requested, 'skipped': skipped,
              'finished': finished, 'unsettled': unsettled, 'pending': requested - skipped - finished + unsettled}
    return DiagnosticStatus(level=DiagnosticStatus.OK, name='adawm/adaptation', message=f'{finished} finetuning steps',
                            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])


def progress_of_msg(msg: DiagnosticStatus) -> tuple[float, int]:
    """(newest frame taken, pending work) of a progress report; ValueError if it lacks either."""
    values = {kv.key: kv.value for kv in msg.values}
    try:
        return float(values['frame']), int(values['pending'])
    except (KeyError, ValueError):
        raise ValueError(f'not an adaptation progress report: {values}') from None
