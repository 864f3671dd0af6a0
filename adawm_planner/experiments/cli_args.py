"""Command-line helpers shared by the `adawm` subcommands: flags built from a knob schema (core.knobs), so a
flag and a node parameter are one knob; and refusals — one line naming what is valid, exit 2, before
anything is written."""
from __future__ import annotations

import argparse
import sys

from adawm_planner.core.knobs import knobs


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (`adawm finetune: unknown task 'x'; known: ...`), exit 2."""

    def error(self, message):
        self.exit(2, f'{self.prog}: {message}\n')


def refuse(command: str, message: str) -> int:
    print(f'adawm {command}: {message}', file=sys.stderr)
    return 2


class Refused(Exception):
    """A refusal found by a check below; the subcommand returns refuse(command, str(exc))."""


def add_knob_arguments(parser: argparse.ArgumentParser, cls, skip=()) -> None:
    for field in knobs(cls):
        if field.name in skip:
            continue
        meta = field.metadata
        parser.add_argument('--' + field.name.replace('_', '-'), type=type(field.default), default=field.default,
                            choices=meta['choices'], help=f'{meta["description"]} (default {field.default})')


def knobs_from_args(cls, args, **fixed):
    """The dataclass from parsed flags; Refused names an invalid value."""
    values = {f.name: getattr(args, f.name) for f in knobs(cls) if hasattr(args, f.name)}
    try:
        return cls(**{**values, **fixed})
    except ValueError as exc:
        raise Refused(str(exc)) from None


def check_task(task: str) -> str:
    """A task name, with any '@FIELD=VALUE,...' overrides, or Refused saying why."""
    from adawm_planner.sim import task_problem
    problem = task_problem(task)
    if problem:
        raise Refused(problem)
    return task


def check_pair(pair: str) -> dict:
    from adawm_planner.sim import shift_pairs
    pairs = shift_pairs()
    if pair not in pairs:
        raise Refused(f'unknown shift pair {pair!r}; known: {", ".join(pairs)}')
    return pairs[pair]


def check_checkpoint(path) -> str:
    """A checkpoint whose files check out (model.json, contract, sha256), or Refused saying why."""
    from adawm_planner.core.checkpoint import CheckpointError, check_files
    try:
        check_files(path)
    except CheckpointError as exc:
        raise Refused(f'cannot use checkpoint {path}: {str(exc).splitlines()[0]}') from None
    return str(path)


def add_ray_arguments(parser, count: str, help_count: str) -> None:
    """`--COUNT N` (Ray processes) and `--ray-address`; without `--COUNT` Ray is not used."""
    parser.add_argument(f'--{count}', type=int, default=None, help=help_count)
    parser.add_argument('--ray-address', default=None,
                        help=f'Ray cluster to join (e.g. HEAD:6379 after `ray start --head`); default: a local '
                             f'Ray instance on loopback, with --{count}')


def check_ray(args, count: str):
    """The number of Ray processes asked for (None: no Ray), or Refused."""
    n = getattr(args, count)
    if n is None:
        if args.ray_address:
            raise Refused(f'--ray-address needs --{count}')
        return None
    if n < 1:
        raise Refused(f'--{count} must be at least 1, got {n}')
    import importlib.util
    if importlib.util.find_spec('ray') is None:
        raise Refused(f'--{count} needs Ray: pip install ray (pinned in requirements.txt)')
    return n
