"""`adawm pretrain` and `adawm evaluate`: train the world model + actor-critic on an embedded task, and
measure a checkpoint (success, collision, off-route and timeout rates, TTC, route completion, return)."""
import json

from adawm_planner.experiments.cli_args import (Refused, add_ray_arguments, check_checkpoint, check_ray, check_task,
                                                refuse)


def register(subparsers):
    pre = subparsers.add_parser('pretrain', help='pretrain world model + actor-critic on an embedded task',
                                description=pretrain_command.__doc__)
    pre.add_argument('--task', default=None, help='task name (default: default_pretrain_task of config/tasks.yaml)')
    pre.add_argument('--preset', default='small', help='model preset from config/presets.yaml')
    pre.add_argument('--steps', type=int, default=None, help='environment steps (required without --dataset)')
    pre.add_argument('--dataset', default=None, help='learn from this dataset (`adawm dataset`) instead of the env')
    pre.add_argument('--updates', type=int, default=None, help='with --dataset: learner updates (required)')
    pre.add_argument('--holdout', type=float, default=0.1, help='with --dataset: held-out fraction (the last steps)')
    pre.add_argument('--behaviour-cloning', type=float, default=None, metavar='W',
                     help='with --dataset: weight of the recorded actions\' likelihood in the actor loss '
                          '(default experiments/dataset.py BEHAVIOUR_CLONING; 0: imagination alone)')
    pre.add_argument('--out', default=None, help='run directory (default runs/pretrain-TASK-PRESET-sSEED)')
    pre.add_argument('--checkpoint', default=None, help='checkpoint directory (default OUT/checkpoint)')
    pre.add_argument('--seed', type=int, default=0)
    pre.add_argument('--train-ratio', type=float, default=None, help="replayed steps per env step (preset's if unset)")
    pre.add_argument('--eval-every', type=int, default=5000,
                     help='env steps (with --dataset: updates) between evaluations + checkpoints')
    pre.add_argument('--eval-episodes', type=int, default=10)
    pre.add_argument('--eval-mode', choices=['actor', 'plan', 'sample'], default='actor')
    pre.add_argument('--time-limit', type=float, default=None, help='stop (evaluate, save) after this many minutes')
    pre.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch decides)')
    pre.add_argument('--continuous', action='store_true', help='continuous (acceleration, steer) actions')
    pre.add_argument('--no-progress', action='store_true', help='no progress bar')
    add_ray_arguments(pre, 'collectors', 'this many Ray actors step the simulator while this process trains')
    pre.set_defaults(func=pretrain_command)

    ev = subparsers.add_parser('evaluate', help='evaluate a checkpoint on a task', description=evaluate_command.__doc__)
    ev.add_argument('--checkpoint', required=True, help='checkpoint directory (model.json + model.safetensors)')
    ev.add_argument('--task', default=None, help="task name (default: the checkpoint's task)")
    ev.add_argument('--episodes', type=int, default=50)
    ev.add_argument('--mode', choices=['plan', 'actor', 'sample'], default='plan',
                    help="plan: imagination planner; actor: actor's most likely action; sample: sampled from the actor")
    ev.add_argument('--threads', type=int, default=None)
    ev.add_argument('--json', action='store_true', help='print the metrics as JSON')
    ev.set_defaults(func=evaluate_command)


def pretrain_command(args):
    """Collect experience in the embedded env and train world model + actor-critic from replay;
    logs scalars to OUT/scalars.csv, evaluates every --eval-every steps and saves a checkpoint each time."""
    import torch

    from adawm_planner.core.presets import load_preset
    from adawm_planner.experiments.pretrain import pretrain
    from adawm_planner.sim import default_task, make_env

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.dataset is not None:
        return _pretrain_from_dataset(args)
    overrides = {} if args.train_ratio is None else {'train_ratio': args.train_ratio}
    try:
        if args.steps is None:
            raise Refused('--steps is required (or --dataset with --updates)')
        if args.behaviour_cloning is not None:
            raise Refused('--behaviour-cloning is for --dataset (online, acting corrects the actor)')
        task = check_task(args.task or default_task())
        preset = load_preset(args.preset, **overrides)
        collectors = check_ray(args, 'collectors')
    except KeyError as exc:
        return refuse('pretrain', exc.args[0])
    except Refused as exc:
        return refuse('pretrain', str(exc))
    out = args.out or f'runs/pretrain-{task}-{args.preset}-s{args.seed}'
    _, metrics = pretrain(task, preset, args.steps, out, args.seed, args.eval_every, args.eval_episodes,
                          args.eval_mode, args.time_limit, not args.no_progress, args.continuous, make_env,
                          args.checkpoint, collectors, args.ray_address)
    print(f'checkpoint: {args.checkpoint or out + "/checkpoint"}')
    print(_table(metrics))
    return 0


def _pretrain_from_dataset(args):
    from pathlib import Path

    from adawm_planner.core.checkpoint import CheckpointError
    from adawm_planner.core.presets import load_preset
    from adawm_planner.experiments.dataset import BEHAVIOUR_CLONING, DatasetError, pretrain_from_dataset, read_manifest
    try:
        env_only = (('--task', args.task), ('--steps', args.steps), ('--time-limit', args.time_limit),
                    ('--train-ratio', args.train_ratio), ('--continuous', args.continuous))
        ignored = [flag for flag, given in env_only if given]
        if ignored:
            raise Refused(f'not used with --dataset (the data sets task and contract): {", ".join(ignored)}')
        if args.updates is None or args.updates < 1:
            raise Refused('--dataset needs --updates N (learner updates, N ≥ 1)')
        if not 0 < args.holdout < 1:
            raise Refused('--holdout must be between 0 and 1')
        if args.behaviour_cloning is not None and not args.behaviour_cloning >= 0:
            raise Refused('--behaviour-cloning must be 0 or more')
        read_manifest(args.dataset)
        preset = load_preset(args.preset)
    except KeyError as exc:
        return refuse('pretrain', exc.args[0])
    except (Refused, DatasetError) as exc:
        return refuse('pretrain', str(exc))
    out = args.out or f'runs/pretrain-dataset-{Path(args.dataset).name}-{args.preset}-s{args.seed}'
    try:
        _, heldout, untrained = pretrain_from_dataset(args.dataset, preset, args.updates, out, args.seed,
                                                      args.holdout, args.eval_every, not args.no_progress,
                                                      args.checkpoint, BEHAVIOUR_CLONING if args.behaviour_cloning is None
                                                      else args.behaviour_cloning)
    except (DatasetError, CheckpointError) as exc:   # CheckpointError: resuming a run of another preset
        return refuse('pretrain', str(exc))
    print(f'checkpoint: {args.checkpoint or out + "/checkpoint"}')
    print('held-out        untrained    trained')
    print('\n'.join(f'  {k:<22}{untrained[k]:10.3f} {heldout[k]:10.3f}' for k in heldout))
    return 0


def evaluate_command(args):
    """Evaluate a checkpoint for N episodes (seeds 10000..) and print the metrics."""
    import torch

    from adawm_planner.core.checkpoint import load_checkpoint
    from adawm_planner.experiments.pretrain import evaluate

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        agent, meta = load_checkpoint(check_checkpoint(args.checkpoint))
        task = check_task(args.task or meta['task'])
    except Refused as exc:
        return refuse('evaluate', str(exc))
    metrics = evaluate(agent, task, args.episodes, args.mode, continuous=not agent.discrete)
    if args.json:
        print(json.dumps({'task': task, 'mode': args.mode, 'episodes': args.episodes, **metrics}))
    else:
        print(f'{args.checkpoint} on {task}, {args.episodes} episodes, mode {args.mode}')
        print(_table(metrics))
    return 0


def _table(metrics):
    return '\n'.join(f'  {name:<17}{value:10.3f}' for name, value in metrics.items())
