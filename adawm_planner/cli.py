"""`adawm` command line: one entry point, one subcommand per job."""
import argparse
import sys

from adawm_planner import __version__
from adawm_planner.core.config import STRATEGIES, FinetuneConfig
from adawm_planner.core.knobs import knobs
from adawm_planner.experiments.cli_args import (Parser, Refused, add_knob_arguments, check_checkpoint, check_task,
                                                refuse)
from adawm_planner.experiments import finetune_cli, pretrain_cli, sim_cli


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog='adawm', description=__doc__)
    parser.add_argument('--version', action='version', version=f'adawm {__version__}')
    commands = parser.add_subparsers(dest='command', metavar='COMMAND')

    launch = commands.add_parser('launch', help='run a ROS 2 XML launch file where `ros2 launch` is not installed')
    launch.add_argument('file', help='launch file, e.g. launch/adawm.launch.xml')
    launch.add_argument('arguments', nargs='*', metavar='NAME:=VALUE', help='launch arguments')
    launch.add_argument('--duration', type=float, default=None, metavar='S',
                        help='stop every node after S seconds (default: run until Ctrl-C / SIGTERM)')
    launch.set_defaults(func=_launch)

    record = commands.add_parser('record', help='record the stack\'s topics into a rosbag2 folder (MCAP)')
    record.add_argument('out', help='new rosbag2 folder to write')
    record.add_argument('--topics', nargs='+', default=None, help='topics to record (default: bridge + AdaWM topics)')
    record.add_argument('--duration', type=float, default=None, metavar='S', help='stop after S seconds')
    record.set_defaults(func=lambda a: _bag().record(a.out, a.topics, a.duration))

    replay = commands.add_parser('replay', help='publish a rosbag2 recording with its original timing and /clock')
    replay.add_argument('bag', help='rosbag2 folder')
    replay.add_argument('--rate', type=float, default=1.0, help='playback speed factor (default 1.0)')
    replay.add_argument('--loop', action='store_true', help='start over at the end')
    replay.add_argument('--topics', nargs='+', default=None, help='replay only these topics (default: all)')
    replay.add_argument('--wait-for-subscribers', type=float, default=0.5, metavar='SECONDS',
                        help='before the first message, wait until a subscriber is matched on a replayed topic, '
                             'at most this long (default 0.5)')
    replay.set_defaults(func=lambda a: _bag().replay(a.bag, a.rate, a.loop, a.topics, a.wait_for_subscribers))

    finetune_cli.register(commands)
    pretrain_cli.register(commands)
    sim_cli.register(commands)

    analyze = commands.add_parser('analyze', help='run the world model offline over a recorded drive (no DDS)')
    analyze.add_argument('bag', help='rosbag2 folder or .mcap file')
    analyze.add_argument('--checkpoint', default='', help='pretrained checkpoint (default: the shipped one)')
    analyze.add_argument('--adapter', nargs='*', default=[], help='adapter .safetensors file(s) to apply')
    analyze.add_argument('--out', default=None, help='output folder (default runs/analyze/BAGNAME)')
    add_knob_arguments(analyze, FinetuneConfig, skip=[f.name for f in knobs(FinetuneConfig)
                                                      if f.name not in ('threshold_c', 'window', 'outcome_window')])
    analyze.set_defaults(func=_analyze)

    dataset = commands.add_parser('dataset', help='turn recorded drives into training sequences (no DDS)')
    dataset.add_argument('bags', nargs='+', metavar='BAG', help='rosbag2 folder(s) or .mcap file(s)')
    dataset.add_argument('--out', required=True, help='new dataset folder')
    source = dataset.add_mutually_exclusive_group()
    source.add_argument('--checkpoint', default='', help='take the contract (step period, actions, BEV) from this '
                        'checkpoint, the model the data is for (default: the shipped one)')
    source.add_argument('--task', default=None, help='take the contract from this embedded task instead '
                        '(for a model pretrained from scratch on the data)')
    dataset.add_argument('--role', default='ego_vehicle', help='role name of the recorded vehicle')
    dataset.add_argument('--shard-steps', type=int, default=1024, help='steps per shard file')
    dataset.set_defaults(func=_dataset)

    demo = commands.add_parser('demo', help='run the embedded stack with adaptation on a shift pair and report')
    demo.add_argument('--duration', type=float, default=240.0, metavar='S', help='seconds to run (default 240)')
    demo.add_argument('--pair', default=None, help='shift pair from config/tasks.yaml (default: default_pair)')
    demo.add_argument('--strategy', default='adawm', choices=STRATEGIES)
    demo.add_argument('--checkpoint', default='', help='pretrained checkpoint (default: the shipped one)')
    demo.add_argument('--out', default=None, help='report folder (default runs/demo/DATE-TIME)')
    demo.add_argument('--record', action='store_true', help='also record the run as a rosbag2 folder')
    demo.add_argument('--window', type=float, default=60.0, metavar='S',
                      help='simulated seconds per window of the trend (default 60)')
    demo.add_argument('--compare', action='store_true', help='then run the same seeds with adaptation off for the '
                      'same simulated time, and print both and the difference')
    demo.add_argument('--lockstep', action='store_true', help='the simulation steps only when the planner has '
                      'answered and the adaptation node has caught up (slower than real time; the outcome does not '
                      'depend on CPU speed)')
    demo.set_defaults(func=_demo)
    return parser


def _analyze(args) -> int:
    from pathlib import Path

    from adawm_planner.analyze import analyze
    from adawm_planner.core import lora
    from adawm_planner.nodes.convert import default_checkpoint
    try:
        if not Path(args.bag).exists():
            raise Refused(f'no recording at {args.bag}')
        checkpoint = check_checkpoint(args.checkpoint or default_checkpoint())
        for path in args.adapter:
            lora.load(path)
    except (Refused, lora.AdapterError, OSError) as exc:
        return refuse('analyze', str(exc))
    out = Path(args.out or f'runs/analyze/{Path(args.bag).name}')
    summary = analyze(args.bag, checkpoint, out, args.adapter, threshold_c=args.threshold_c, window=args.window,
                      outcome_window=args.outcome_window)
    print(f'{summary["steps"]} steps, {summary["bag_seconds"]} s of recording in {summary["wall_seconds"]} s '
          f'({summary["real_time_factor"]}× real time); decisions {summary.get("decisions", {})}')
    for note in summary['notes']:
        print(f'  note: {note}')
    print(f'written: {out}/summary.md, steps.csv, timeline.png, montage.png')
    return 0 if summary['steps'] else 1


def _dataset(args) -> int:
    from pathlib import Path

    from adawm_planner.core.checkpoint import read_contract, read_meta
    from adawm_planner.dataset import build_dataset
    from adawm_planner.nodes.convert import default_checkpoint
    try:
        missing = [bag for bag in args.bags if not Path(bag).exists()]
        if missing:
            raise Refused(f'no recording at {", ".join(missing)}')
        if Path(args.out).exists():
            raise Refused(f'{args.out} exists; choose a new folder')
        if args.shard_steps < 1:
            raise Refused('--shard-steps must be at least 1')
        if args.task:
            from adawm_planner.sim import make_env
            task = check_task(args.task)
            contract, source = make_env(task).unwrapped.contract(), {'task': task}
        else:
            checkpoint = check_checkpoint(args.checkpoint or default_checkpoint())
            meta = read_meta(checkpoint)
            contract, source, task = read_contract(meta), {'checkpoint': checkpoint}, meta.get('task')
    except Refused as exc:
        return refuse('dataset', str(exc))
    manifest = build_dataset(args.bags, args.out, contract, source, task, args.role, args.shard_steps)
    mapping, conversion = manifest['action_mapping'], manifest['conversion']
    print(f'{manifest["steps"]} steps in {manifest["segments"]} segments from {len(args.bags)} bag(s), contract from '
          f'{source}; {conversion["recorded_seconds"]} s recorded in {conversion["wall_seconds"]} s')
    if mapping['pedal_residual']:
        print(f'action mapping error: |pedal| mean {mapping["pedal_residual"]["mean"]:.3f} '
              f'(max {mapping["pedal_residual"]["max"]:.3f}), |steer| mean {mapping["steer_residual"]["mean"]:.3f} '
              f'(max {mapping["steer_residual"]["max"]:.3f})')
    for entry in manifest['sources']:
        for note in entry['notes']:
            print(f'  {entry["bag"]}: {note}')
        for span in entry['skipped_spans']:
            print(f'  {entry["bag"]}: skipped {span["from"]:.2f}-{span["to"]:.2f} s: {span["why"]}')
    print(f'written: {args.out}/dataset.json and {len(manifest["shards"])} shard(s)')
    return 0 if manifest['steps'] else 1


def _demo(args) -> int:
    import time
    from pathlib import Path

    from adawm_planner import demo
    from adawm_planner.share import package_share
    launch_file = package_share() / 'launch/adawm.launch.xml'
    out = Path(args.out or f'runs/demo/{time.strftime("%Y%m%d-%H%M%S")}')
    return demo.run(args.duration, args.pair, out, args.strategy, launch_file, args.record, args.checkpoint,
                    args.window, args.compare, args.lockstep)


def _bag():
    from adawm_planner.nodes import bag
    return bag


def _launch(args) -> int:
    from adawm_planner import launch_runner
    return launch_runner.main(args.file, args.arguments, args.duration)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == '__main__':
    sys.exit(main())
