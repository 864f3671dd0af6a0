"""Pretraining from recorded drives against online pretraining at equal environment steps.

1. Record: drives of the scripted driver (test_dataset's write_drives: the bridge's topics written as
   `adawm record` writes them, random controls mixed in) and of the shipped planner in the embedded stack
   (lockstep launch, adaptation off, `adawm record` beside it).
2. `adawm dataset` of both recordings (the contract of the pretraining task: a model from scratch).
3. Offline: `adawm pretrain --dataset` for as many learner updates as the online run takes — as shipped
   (behaviour cloning in the actor loss) and with `--behaviour-cloning 0` (the actor in imagination alone).
4. Online: `adawm pretrain --task` for as many environment steps as the dataset holds (its recipe: random
   actions for the preset's prefill, then the agent's sampled actions, one update per batch*seq/train_ratio);
   or, with --online CHECKPOINT, an online run that exists (the shipped checkpoint is one: 25 000 steps,
   1437 updates), its update count taken from its model.json — record at least as many steps then.
5. `adawm evaluate` of both checkpoints (and of the shipped one, for scale) on the pretraining task.

Every stage leaves its output under --out and is skipped when run again (resumable); one torch thread.
Loopback only; run it under idle priority:

    ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID=61 chrt --idle 0 \\
        .venv/bin/python bench/bench_offline.py --scripted-episodes 30 --planner-minutes 9 --out runs/bench_offline
    ... --scripted-episodes 60 --planner-minutes 28.5 --online checkpoints/right_turn-moderate-small --out runs/bench_offline_25k
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'test'))
HOLDOUT = 0.1   # the offline runs' held-out tail, on which every world model is scored at the end


def cli(*args, log: Path):
    """`adawm ARGS` with one torch thread; its output goes to `log`; a failure stops the bench."""
    command = [sys.executable, '-m', 'adawm_planner.cli', *args]
    print('$ adawm ' + ' '.join(args), flush=True)
    started = time.perf_counter()
    with open(log, 'w') as out:
        code = subprocess.call(command, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ, OMP_NUM_THREADS='1'))
    if code:
        raise SystemExit(f'adawm {args[0]} failed ({code}); see {log}')
    return round(time.perf_counter() - started, 1)


def evaluate(checkpoint: Path, task: str, episodes: int, out: Path) -> dict:
    if not out.exists():
        cli('evaluate', '--checkpoint', str(checkpoint), '--task', task, '--episodes', str(episodes),
            '--mode', 'actor', '--threads', '1', '--json', log=out.with_suffix('.log'))
        text = out.with_suffix('.log').read_text()
        out.write_text(text[text.index('{'):])
    return json.loads(out.read_text())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--scripted-episodes', type=int, default=30)
    parser.add_argument('--planner-minutes', type=float, default=9.0, help='simulated minutes of the planner driving')
    parser.add_argument('--preset', default='small')
    parser.add_argument('--episodes', type=int, default=50, help='evaluation episodes per checkpoint')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--online', default=None, help='an existing online pretraining run\'s checkpoint instead of '
                        'training one')
    parser.add_argument('--out', default='runs/bench_offline')
    args = parser.parse_args()
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')

    from adawm_planner import live
    from adawm_planner.core.checkpoint import read_meta
    from adawm_planner.nodes.convert import default_checkpoint
    from adawm_planner.share import package_share
    from adawm_planner.sim import default_task
    task, out = default_task(), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result_file = out / 'result.json'
    result = json.loads(result_file.read_text()) if result_file.exists() else {}

    def save():
        result_file.write_text(json.dumps(result, indent=2) + '\n')

    # 1. recordings; the episode seeds (20000+) are neither the online run's nor the evaluation's
    scripted = out / 'bags/scripted'
    if not scripted.exists():
        import torch
        torch.set_num_threads(1)
        from test_dataset import write_drives
        started = time.perf_counter()
        write_drives(scripted, args.scripted_episodes, frames=600, seed=20_000)
        result['scripted'] = {'episodes': args.scripted_episodes, 'wall_s': round(time.perf_counter() - started, 1)}
        save()
    planner = out / 'planner_run'
    if not (planner / 'bag').exists():
        command = live.launch_command(package_share() / 'launch/adawm.launch.xml', task, live.OFF, seed=30_000,
                                      lockstep=True)
        run = live.run_stack(command, planner, live.OFF, 30_000, sim_seconds=60 * args.planner_minutes,
                             wall_seconds=3600, record=True)
        result['planner'] = {'sim_s': round(run.sim_end, 1), 'wall_s': run.wall_s, **run.summary}
        save()
        if run.sim_end < 60 * args.planner_minutes:
            raise SystemExit(f'the planner drove only {run.sim_end:.0f} s of simulated time; see {planner}/stack.log')

    # 2. one dataset of both
    dataset = out / 'dataset'
    if not dataset.exists():
        cli('dataset', str(scripted), str(planner / 'bag'), '--task', task, '--out', str(dataset),
            log=out / 'dataset.log')
    manifest = json.loads((dataset / 'dataset.json').read_text())
    steps = manifest['steps']
    result['dataset'] = {'steps': steps, 'segments': manifest['segments'], 'outcomes': manifest['outcomes'],
                         'per_source': [{'bag': s['bag'], 'steps': s['steps'], 'segments': s['segments']}
                                        for s in manifest['sources']], **manifest['conversion']}
    save()

    # 3. online at equal environment steps (its update count sets the offline run's)
    online = Path(args.online) if args.online else out / 'online/checkpoint'
    if args.online and not (online / 'model.json').exists():
        raise SystemExit(f'no checkpoint at {online}')
    if not (online / 'model.json').exists():
        result['online_wall_s'] = cli('pretrain', '--task', task, '--preset', args.preset, '--steps', str(steps),
                                      '--seed', str(args.seed), '--eval-every', str(steps), '--eval-episodes', '5',
                                      '--threads', '1', '--no-progress', '--out', str(out / 'online'), log=out / 'online.log')
        save()
    online_meta = read_meta(online)
    updates = online_meta['updates']
    result.update(updates=updates, online={'checkpoint': str(online), 'steps': online_meta['step'],
                                           'train_wall_s': online_meta.get('train_wall_s')})

    # 4. offline, the same number of updates: as shipped (with the recorded actions' likelihood in the actor
    # loss) and with the actor trained in imagination alone
    checkpoints = {}
    for name, extra in (('offline', []), ('offline_imagination_only', ['--behaviour-cloning', '0'])):
        if not (out / name / 'checkpoint/model.json').exists():
            result[f'{name}_wall_s'] = cli('pretrain', '--dataset', str(dataset), '--preset', args.preset,
                                           '--updates', str(updates), '--holdout', str(HOLDOUT), '--seed',
                                           str(args.seed), '--threads', '1', '--no-progress', *extra,
                                           '--out', str(out / name),
                                           log=out / f'{name}.log')
            save()
        checkpoints[name] = out / name / 'checkpoint'

    # 5. evaluation on the pretraining task
    checkpoints['online'] = online
    if online.resolve() != Path(default_checkpoint()).resolve():
        checkpoints['shipped'] = Path(default_checkpoint())
    result['evaluation'] = {name: evaluate(path, task, args.episodes, out / f'eval_{name}.json')
                            for name, path in checkpoints.items()}
    result['episodes'] = args.episodes
    # 6. the world models on the dataset's held-out tail (the offline run's split; neither trained on it)
    import torch
    torch.set_num_threads(1)
    from adawm_planner.core.checkpoint import load_checkpoint
    from adawm_planner.core.presets import load_preset
    from adawm_planner.experiments.dataset import heldout_metrics, load_dataset, split
    _, contract, arrays = load_dataset(dataset)
    preset = load_preset(args.preset)
    _, heldout = split(arrays, len(contract.action_table()), HOLDOUT, preset.seq_len, args.seed)
    result['heldout'] = {name: {k: round(float(v), 3) for k, v in
                                heldout_metrics(load_checkpoint(path)[0].world_model, heldout).items()}
                         for name, path in checkpoints.items()}
    save()
    print(json.dumps(result, indent=2))


if __name__ == '__main__':
    main()
