"""`adawm` command line: one entry point, one subcommand per job."""
import argparse
import sys

from adawm_planner import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='adawm', description=__doc__)
    parser.add_argument('--version', action='version', version=f'adawm {__version__}')
    commands = parser.add_subparsers(dest='command', metavar='COMMAND')

    launch = commands.add_parser('launch', help='run a ROS 2 XML launch file where `ros2 launch` is not installed')
    launch.add_argument('file', help='launch file, e.g. launch/adawm.launch.xml')
    launch.add_argument('arguments', nargs='*', metavar='NAME:=VALUE', help='launch arguments')
    launch.add_argument('--duration', type=float, default=None, metavar='S',
                        help='stop every node after S seconds (default: run until Ctrl-C / SIGTERM)')
    launch.set_defaults(func=_launch)
    return parser


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
