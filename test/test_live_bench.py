"""bench/bench_live.py end to end, short: the real stack from the launch file in lockstep, adaptation off and
AdaWM on the same seed for 30 simulated seconds each (tiny preset), into a CSV, a plot and a summary; run again
into the same folder it keeps those runs instead of repeating them."""
import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros

ROOT = Path(__file__).parents[1]


def test_bench_live_runs_both_arms_for_their_simulated_time(tiny_checkpoint, tmp_path):
    out = tmp_path / 'live'
    command = [sys.executable, str(ROOT / 'bench/bench_live.py'), '--arms', 'off', 'adawm', '--minutes', '0.5',
               '--window', '0.25', '--checkpoint', str(tiny_checkpoint), '--wall-limit', '240', '--out', str(out)]
    result = subprocess.run(command, env=dict(os.environ), capture_output=True, text=True, timeout=600)
    logs = '\n'.join((p / 'stack.log').read_text()[-1500:] for p in sorted(out.glob('*-seed0')))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:] + logs
    rows = list(csv.DictReader(open(out / 'live.csv')))
    assert [(r['arm'], r['window'], r['end_s']) for r in rows] == [('off', '0', '15.0'), ('off', '1', '30.0'),
                                                                  ('adawm', '0', '15.0'), ('adawm', '1', '30.0')]
    off, adawm = rows[:2], rows[2:]
    assert all(float(r['finetune_steps_per_min']) == 0 and r['adapters_applied'] == '0' for r in off)
    # the node finetunes once its replay holds a window (64 model steps: 6.4 s), then every 8 model steps
    assert float(adawm[1]['finetune_steps_per_min']) > 0
    assert (out / 'live.png').stat().st_size > 0
    summary = (out / 'live.md').read_text()
    assert 'bench/bench_live.py --arms off adawm' in summary and 'FAILED' not in summary

    # resumed: both runs kept, nothing launched, the same rows and totals
    first_csv, first_runs = (out / 'live.csv').read_text(), (out / 'runs.json').read_text()
    again = subprocess.run(command, env=dict(os.environ), capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert 'kept adawm seed 0, off seed 0' in again.stdout and 'done:' not in again.stdout
    assert (out / 'live.csv').read_text() == first_csv and (out / 'runs.json').read_text() == first_runs
