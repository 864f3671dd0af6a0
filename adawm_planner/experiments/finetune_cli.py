"""`adawm finetune` and `adawm experiment`: the strategy table of AdaWM against its baselines."""
from pathlib import Path

from adawm_planner.core.config import STRATEGIES, FinetuneConfig
from adawm_planner.experiments.cli_args import (Refused, add_knob_arguments, check_checkpoint, check_pair,
                                                check_task, knobs_from_args, refuse)


def register(commands):
    finetune = commands.add_parser('finetune', help='finetune a pretrained checkpoint on a new task with one strategy')
    finetune.add_argument('--checkpoint', required=True, help='pretrained checkpoint directory')
    finetune.add_argument('--task', required=True, help='new task (config/tasks.yaml)')
    finetune.add_argument('--steps', type=int, default=3000, help='environment steps on the new task')
    finetune.add_argument('--out', default=None, help='run folder (default runs/finetune/TASK/STRATEGY/seedN)')
    finetune.add_argument('--seed', type=int, default=0)
    _common(finetune)
    finetune.set_defaults(func=_finetune)

    experiment = commands.add_parser('experiment', help='all strategies × seeds on a shift pair; resumable')
    experiment.add_argument('--pair', required=True, help='shift pair name (config/tasks.yaml)')
    experiment.add_argument('--checkpoint', default=None,
                            help='pretrained checkpoint (default: the shipped one for the pair\'s pretrain task)')
    experiment.add_argument('--seeds', type=int, default=3)
    experiment.add_argument('--strategies', nargs='+', choices=STRATEGIES, default=list(STRATEGIES))
    experiment.add_argument('--steps', type=int, default=3000, help='environment steps per run')
    experiment.add_argument('--out', default=None, help='results folder (default runs/experiments/PAIR)')
    _common(experiment, skip=('strategy',))
    experiment.set_defaults(func=_experiment)


def _common(parser, skip=()):
    add_knob_arguments(parser, FinetuneConfig, skip)
    parser.add_argument('--eval-every', type=int, default=1000)
    parser.add_argument('--eval-episodes', type=int, default=10)


def _finetune(args):
    from adawm_planner.experiments.finetune import finetune
    try:
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


def _experiment(args):
    from adawm_planner.experiments.finetune import experiment
    from adawm_planner.share import package_share
    try:
        pair = check_pair(args.pair)
        shipped = sorted((package_share() / 'checkpoints').glob(f'{pair["pretrain"]}*/model.json'))
        if not (args.checkpoint or shipped):
            raise Refused(f'no shipped checkpoint for {pair["pretrain"]}; pass --checkpoint')
        checkpoint = check_checkpoint(args.checkpoint or shipped[0].parent)
        config = knobs_from_args(FinetuneConfig, args)
    except Refused as exc:
        return refuse('experiment', str(exc))
    out = Path(args.out or f'runs/experiments/{args.pair}')
    experiment(checkpoint, pair['pretrain'], pair['finetune'], out, args.seeds, args.strategies, args.steps, config,
               eval_every=args.eval_every, eval_episodes=args.eval_episodes)
    print((out / 'table.md').read_text())
    return 0
