"""`adawm finetune` and `adawm experiment`: the strategy table of AdaWM against its baselines."""
from pathlib import Path

STRATEGY_CHOICES = ('adawm', 'policy', 'model', 'alternate', 'full', 'none')


def register(commands):
    finetune = commands.add_parser('finetune', help='finetune a pretrained checkpoint on a new task with one strategy')
    finetune.add_argument('--checkpoint', required=True, help='pretrained checkpoint directory')
    finetune.add_argument('--task', required=True, help='new task (config/tasks.yaml)')
    finetune.add_argument('--strategy', choices=STRATEGY_CHOICES, default='adawm')
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
    experiment.add_argument('--strategies', nargs='+', choices=STRATEGY_CHOICES, default=list(STRATEGY_CHOICES))
    experiment.add_argument('--steps', type=int, default=3000, help='environment steps per run')
    experiment.add_argument('--out', default=None, help='results folder (default runs/experiments/PAIR)')
    _common(experiment)
    experiment.set_defaults(func=_experiment)


def _common(parser):
    parser.add_argument('--threshold-c', type=float, default=5.0, help='C of the rule ε_P > C·ε_π (paper: 2..50)')
    parser.add_argument('--rank', type=int, default=8, help='LoRA rank')
    parser.add_argument('--train-every', type=int, default=8, help='environment steps per finetuning step')
    parser.add_argument('--eval-every', type=int, default=1000)
    parser.add_argument('--eval-episodes', type=int, default=10)


def _config(args, strategy):
    from adawm_planner.core.adaptation import FinetuneConfig
    return FinetuneConfig(strategy=strategy, threshold_c=args.threshold_c, rank=args.rank)


def _finetune(args):
    from adawm_planner.core.finetune import finetune
    out = args.out or f'runs/finetune/{args.task}/{args.strategy}/seed{args.seed}'
    result = finetune(args.checkpoint, args.task, args.strategy, args.steps, out, args.seed,
                      _config(args, args.strategy), train_every=args.train_every, eval_every=args.eval_every,
                      eval_episodes=args.eval_episodes)
    before, after = result['before'], result['after']
    print(f'{args.strategy} on {args.task}: success {before["success"]:.2f} -> {after["success"]:.2f}, '
          f'collision {before["collision"]:.2f} -> {after["collision"]:.2f}, '
          f'decisions {result["decisions"]}, {result["wall_s"]:.0f} s; files in {out}')
    return 0


def _experiment(args):
    from adawm_planner.core.finetune import experiment
    from adawm_planner.sim import shift_pairs
    pairs = shift_pairs()
    if args.pair not in pairs:
        print(f'adawm experiment: unknown pair {args.pair!r}; known: {", ".join(pairs)}')
        return 2
    pretrain_task, finetune_task = pairs[args.pair]['pretrain'], pairs[args.pair]['finetune']
    from adawm_planner.share import package_share
    shipped = sorted((package_share() / 'checkpoints').glob(f'{pretrain_task}*/model.json'))
    if not (args.checkpoint or shipped):
        print(f'adawm experiment: no checkpoint for {pretrain_task}; pass --checkpoint')
        return 2
    checkpoint = args.checkpoint or str(shipped[0].parent)
    out = Path(args.out or f'runs/experiments/{args.pair}')
    experiment(checkpoint, pretrain_task, finetune_task, out, args.seeds, args.strategies, args.steps,
               train_every=args.train_every, eval_every=args.eval_every, eval_episodes=args.eval_episodes,
               config=_config(args, 'adawm'))
    print((out / 'table.md').read_text())
    return 0
