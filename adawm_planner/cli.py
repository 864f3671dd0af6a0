"""`adawm` command line: one entry point, one subcommand per job."""
import argparse
import sys

from adawm_planner import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='adawm', description=__doc__)
    parser.add_argument('--version', action='version', version=f'adawm {__version__}')
    parser.add_subparsers(dest='command', metavar='COMMAND')
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == '__main__':
    sys.exit(main())
