"""Scaling out on Ray (#16): pretraining throughput without Ray and with 1 and 2 simulator collectors, and a
strategy grid's wall time serial and with --workers 2. Every configuration runs in a fresh process (Ray
started anew, one torch thread); each result is appended to OUT/results.jsonl as it comes.

    .venv/bin/python bench/bench_ray.py pretrain [--steps 1600 --prefill 400 --modes serial 1 2]
    .venv/bin/python bench/bench_ray.py grid [--steps 200 --seeds 2 --strategies none adawm]

pretrain: `small` preset on the default task, the preset's train ratio, prefill shortened to --prefill so
that most of the run trains; env steps/s and updates/s are over the whole pretrain() call (prefill, the one
closing evaluation episode and the checkpoint included, Ray's start-up not: it is reported beside), and with
collectors the share of the post-prefill time the learner was busy rather than waiting for steps.
grid: `adawm experiment --pair density` with the shipped checkpoint, wall time of the whole command.
"""
import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path


def pretrain_once(args):
    """In a child process: one pretrain() run, its figures as one JSON line."""
    import torch

    from adawm_planner.core.checkpoint import read_meta
    from adawm_planner.core.presets import load_preset
    from adawm_planner.experiments.pretrain import pretrain
    from adawm_planner.sim import default_task

    torch.set_num_threads(1)
    collectors = None if args.mode == 'serial' else int(args.mode)
    ray_start_s = 0.0
    if collectors:
        from adawm_planner.experiments.scale import init_ray
        started = time.perf_counter()
        init_ray(num_cpus=collectors)
        ray_start_s = time.perf_counter() - started
    out = Path(args.out) / f'pretrain-{args.mode}'
    started = time.perf_counter()
    pretrain(default_task(), load_preset('small', prefill=args.prefill), args.steps, out, eval_every=args.steps,
             eval_episodes=1, progress=False, collectors=collectors)
    wall = time.perf_counter() - started
    meta = read_meta(out / 'checkpoint')
    busy = None
    if collectors:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        board = EventAccumulator(str(out), size_guidance={'scalars': 0})
        board.Reload()
        busy = round(board.Scalars('throughput/learner_busy')[-1].value, 3)
    print(json.dumps({'bench': 'pretrain', 'mode': args.mode, 'steps': meta['step'], 'updates': meta['updates'],
                      'wall_s': round(wall, 1), 'ray_start_s': round(ray_start_s, 1),
                      'env_steps_per_s': round(meta['step'] / wall, 2),
                      'updates_per_s': round(meta['updates'] / wall, 3), 'learner_busy': busy}))


def record(out, row):
    with open(Path(out) / 'results.jsonl', 'a') as f:
        f.write(json.dumps(row) + '\n')
    print(row, flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('what', choices=['pretrain', 'grid', '_pretrain_once'])
    parser.add_argument('--out', default='runs/bench_ray')
    parser.add_argument('--steps', type=int, default=None, help='env steps (pretrain: 1600, grid: 200 per run)')
    parser.add_argument('--prefill', type=int, default=400)
    parser.add_argument('--modes', nargs='+', default=['serial', '1', '2'])
    parser.add_argument('--mode', default='serial')
    parser.add_argument('--seeds', type=int, default=2)
    parser.add_argument('--strategies', nargs='+', default=['none', 'adawm'])
    args = parser.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.what == '_pretrain_once':
        return pretrain_once(args)
    if args.what == 'pretrain':
        for mode in args.modes:
            child = subprocess.run([sys.executable, __file__, '_pretrain_once', '--mode', mode, '--out', args.out,
                                    '--steps', str(args.steps or 1600), '--prefill', str(args.prefill)],
                                   capture_output=True, text=True, check=True)
            record(args.out, json.loads(child.stdout.strip().splitlines()[-1]))
        return
    steps = args.steps or 200
    for workers in (None, 2):
        out = Path(args.out) / f'grid-{"serial" if workers is None else f"workers{workers}"}'
        command = [sys.executable, '-m', 'adawm_planner.cli', 'experiment', '--pair', 'density', '--seeds',
                   str(args.seeds), '--strategies', *args.strategies, '--steps', str(steps), '--eval-every',
                   str(steps), '--eval-episodes', '2', '--out', str(out)]
        command += ['--workers', str(workers)] if workers else []
        shutil.rmtree(out, ignore_errors=True)   # a fresh grid: no finished runs to skip
        started = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True)
        record(args.out, {'bench': 'grid', 'workers': workers, 'runs': args.seeds * len(args.strategies),
                          'steps': steps, 'wall_s': round(time.perf_counter() - started, 1),
                          'table': (out / 'table.md').read_text()})


if __name__ == '__main__':
    main()
