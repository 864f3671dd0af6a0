"""`adawm finetune` and `adawm experiment`: the strategy table of AdaWM against its baselines."""
import sys
from pathlib import Path

from adawm_planner.core.config import STRATEGIES, FinetuneConfig
from adawm_planner.experiments.cli_args import (Refused, add_knob_arguments, add_ray_arguments, check_checkpoint,
                                                check_pair, check_ray, check_task, knobs_from_args, refuse)


def register(commands):
    finetune = commands.add_parser('finetune', help='finetune a pretrained checkpoint on a new task with one strategy')
    finetune.add_argument('--checkpoint', required=True, help='pretrained checkpoint directory')
    finetune.add_argument('--task', default=None, help='new task (config/tasks.yaml); required without --dataset')
    finetune.add_argument('--dataset', default=None, help='finetune offline on this dataset (`adawm dataset`) '
                          'instead of driving a task')
    finetune.add_argument('--steps', type=int, default=3000, help='environment steps on the new task')
    finetune.add_argument('--out', default=None, help='run folder (default runs/finetune/TASK/STRATEGY/seedN)')
    finetune.add_argument('--seed', type=int, default=0)
    _common(finetune)
    finetune.set_defaults(func=_finetune)

    experiment = commands.add_parser('experiment', help='all strategies × seeds on a shift pair; resumable')
    which = experiment.add_mutually_exclusive_group(required=True)
    which.add_argument('--pair', help='shift pair name (config/tasks.yaml)')
    which.add_argument('--from', dest='from_task', metavar='TASK', help='or any pair: the pretraining task ...')
    experiment.add_argument('--to', dest='to_task', metavar='TASK',
                            help="... and the new task (with --from); either may change fields of a named task, "
                                 "e.g. 'right_turn-moderate@lag=0.3,steer_gain=0.7' (docs/tasks.md)")
    experiment.add_argument('--checkpoint', default=None,
                            help='pretrained checkpoint (default: the shipped one for the pair\'s pretrain task)')
    experiment.add_argument('--seeds', type=int, default=3, help='seeds 0 .. SEEDS-1')
    experiment.add_argument('--first-seed', type=int, default=0,
                            help='start at this seed instead (the earlier ones run elsewhere)')
    experiment.add_argument('--strategies', nargs='+', choices=STRATEGIES, default=list(STRATEGIES))
    experiment.add_argument('--steps', type=int, default=3000, help='environment steps per run')
    experiment.add_argument('--out', default=None, help='results folder (default runs/experiments/PAIR)')
    add_ray_arguments(experiment, 'workers', 'run the grid as Ray tasks, this many at a time (one CPU each)')
    _common(experiment, skip=('strategy',))
    experiment.set_defaults(func=_experiment)


def _common(parser, skip=()):
    add_knob_arguments(parser, FinetuneConfig, skip)
    parser.add_argument('--eval-every', type=int, default=1000)
    parser.add_argument('--eval-episodes', type=int, default=10)


def _finetune(args):
    if args.dataset is not None:
        return _finetune_from_dataset(args)
    from adawm_planner.experiments.finetune import finetune
    try:
        if args.task is None:
            raise Refused('--task is required (or --dataset)')
        task, checkpoint = check_task(args.task), check_checkpoint(args.checkpoint)
        config = knobs_from_args(FinetuneConfig, args)
    except Refused as exc:
        return refuse('finetune', str(exc))
    out = args.out or f'runs/finetune/{task}/{config.strategy}/seed{args.seed}'
    result = finetune(checkpoint, task, args.steps, out, args.seed, config, eval_every=args.eval_every,
                      eval_episodes=args.eval_episodes)
    before, after = result['before'], result['after']
    print(f'{config.strategy} on {task}: success {before["success"]:.2f} -> {after["success"]:.2f}, '
          f'collision {before["collision"]:.2f} -> {after["collision"]:.2f}, '
          f'decisions {result["decisions"]}, {result["wall_s"]:.0f} s; files in {out}')
    return 0


def _finetune_from_dataset(args):
    from adawm_planner.experiments.dataset import DatasetError, finetune_from_dataset, read_manifest
    try:
        if args.task is not None:
            raise Refused('--task and --dataset exclude each other')
        checkpoint = check_checkpoint(args.checkpoint)
        config = knobs_from_args(FinetuneConfig, args)
        read_manifest(args.dataset)
    except (Refused, DatasetError) as exc:
        return refuse('finetune', str(exc))
    out = args.out or f'runs/finetune/dataset-{Path(args.dataset).name}/{config.strategy}/seed{args.seed}'
    try:
        result = finetune_from_dataset(checkpoint, args.dataset, out, args.seed, config)
    except DatasetError as exc:
        return refuse('finetune', str(exc))
    print(f'{config.strategy} offline on {args.dataset}: {result["finetune_steps"]} finetuning steps over '
          f'{result["dataset_steps"]} steps, decisions {result["decisions"]}, adapters {list(result["adapters"])}; '
          f'files in {out}')
    return 0


def _experiment(args):
    from adawm_planner.experiments.finetune import experiment
    from adawm_planner.experiments.scale import GridError   # Ray itself is imported only with --workers
    from adawm_planner.share import package_share
    try:
        if args.pair:
            pair = check_pair(args.pair)
        elif args.to_task:
            pair = {'pretrain': check_task(args.from_task), 'finetune': check_task(args.to_task)}
        else:
            raise Refused('--from TASK needs --to TASK')
        if not 0 <= args.first_seed < args.seeds:
            raise Refused(f'--first-seed {args.first_seed} leaves no seed to run with --seeds {args.seeds}')
        known = pair.get('known_side')   # the oracle runs only where the right side is known
        strategies = [s for s in args.strategies if s != 'oracle' or known or args.known_side != 'unknown']
        shipped = sorted((package_share() / 'checkpoints').glob(f'{pair["pretrain"]}*/model.json'))
        if not (args.checkpoint or shipped):
            raise Refused(f'no shipped checkpoint for {pair["pretrain"]}; pass --checkpoint')
        checkpoint = check_checkpoint(args.checkpoint or shipped[0].parent)
        config = knobs_from_args(FinetuneConfig, args, **({'known_side': known} if known else {}))
        workers = check_ray(args, 'workers')
    except Refused as exc:
        return refuse('experiment', str(exc))
    out = Path(args.out or f'runs/experiments/{args.pair or pair["pretrain"] + "-to-" + pair["finetune"]}')
    try:
        experiment(checkpoint, pair['pretrain'], pair['finetune'], out, args.seeds, strategies, args.steps, config,
                   eval_every=args.eval_every, eval_episodes=args.eval_episodes, workers=workers,
                   ray_address=args.ray_address, first_seed=args.first_seed)
    except GridError as exc:
        print(f'adawm experiment: {exc}; finished runs are saved in {out}, run again to retry', file=sys.stderr)
        return 1
    print((out / 'table.md').read_text())
    return 0
