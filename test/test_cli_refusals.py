"""Every refusal at the command line is one line naming what is valid, exit 2, and writes nothing."""
import pytest

from adawm_planner.cli import main

CASES = [
    (['finetune', '--checkpoint', 'CKPT', '--task', 'no_such_task'], "unknown task 'no_such_task'; known: right_turn"),
    (['finetune', '--checkpoint', 'missing_ckpt', '--task', 'right_turn-dense'], 'cannot use checkpoint missing_ckpt'),
    (['finetune', '--checkpoint', 'CKPT', '--task', 'right_turn-dense', '--strategy', 'greedy'],
     "invalid choice: 'greedy'"),
    (['finetune', '--checkpoint', 'CKPT', '--task', 'right_turn-dense', '--threshold-c', '0'],
     'threshold_c must be positive'),
    (['experiment', '--pair', 'no_such_pair'], "unknown shift pair 'no_such_pair'; known: density"),
    (['experiment', '--pair', 'density', '--checkpoint', 'missing_ckpt'], 'cannot use checkpoint missing_ckpt'),
    (['experiment', '--pair', 'density', '--workers', '0'], '--workers must be at least 1, got 0'),
    (['experiment', '--pair', 'density', '--first-seed', '3', '--seeds', '3'], '--first-seed 3 leaves no seed'),
    (['experiment', '--from', 'right_turn-moderate', '--to', 'right_turn-moderate@wheels=3'],
     "task 'right_turn-moderate@wheels=3': unknown override 'wheels'; known: steer_gain"),
    (['experiment', '--from', 'right_turn-moderate@lag=-1', '--to', 'right_turn-dense'],
     'lag takes a finite number of the sign of its default'),
    (['experiment', '--pair', 'density', '--ray-address', '127.0.0.1:6379'], '--ray-address needs --workers'),
    (['pretrain', '--task', 'no_such_task', '--steps', '10'], "unknown task 'no_such_task'"),
    (['pretrain', '--steps', '10', '--collectors', '0'], '--collectors must be at least 1, got 0'),
    (['pretrain', '--preset', 'huge', '--steps', '10'], "unknown preset 'huge'; known: tiny, small"),
    (['evaluate', '--checkpoint', 'missing_ckpt'], 'cannot use checkpoint missing_ckpt'),
    (['evaluate', '--checkpoint', 'CKPT', '--task', 'no_such_task'], "unknown task 'no_such_task'"),
    (['analyze', 'no_such_bag'], 'no recording at no_such_bag'),
    (['analyze', 'BAG', '--checkpoint', 'missing_ckpt'], 'cannot use checkpoint missing_ckpt'),
    (['sim', 'render', 'no_such_task', '--out', 'x.png'], "unknown task 'no_such_task'"),
    (['sim', 'shift-check', '--pairs', 'no_such_pair'], "unknown shift pair 'no_such_pair'"),
    (['demo', '--pair', 'no_such_pair'], "unknown shift pair 'no_such_pair'; known: density"),
    (['demo', '--strategy', 'greedy'], "invalid choice: 'greedy'"),
    (['replay', 'no_such_bag'], 'cannot read no_such_bag'),
    (['replay', 'BAG', '--wait-for-subscribers', '-1'], '--wait-for-subscribers must not be negative'),
]


@pytest.mark.parametrize('argv, says', CASES, ids=[' '.join(a[:2]) + f' #{i}' for i, (a, _) in enumerate(CASES)])
def test_refusal_is_one_line_exit_2_and_writes_nothing(argv, says, tiny_checkpoint, tmp_path, monkeypatch, capsys):
    bag = tmp_path / 'a_bag'
    bag.mkdir()
    work = tmp_path / 'work'
    work.mkdir()
    monkeypatch.chdir(work)
    argv = [str(tiny_checkpoint) if a == 'CKPT' else str(bag) if a == 'BAG' else a for a in argv]
    try:
        code = main(argv)
    except SystemExit as exc:   # argparse's own refusals
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2, (code, out, err)
    assert says in err and len(err.strip().splitlines()) == 1, err
    assert list(work.iterdir()) == [], 'a refused command wrote files'
