"""Command-line flags built from a knob schema (core.knobs), so a flag and a node parameter are one knob."""
from __future__ import annotations

import argparse

from adawm_planner.core.knobs import knobs


def add_knob_arguments(parser: argparse.ArgumentParser, cls, skip=()) -> None:
    for field in knobs(cls):
        if field.name in skip:
            continue
        meta = field.metadata
        parser.add_argument('--' + field.name.replace('_', '-'), type=type(field.default), default=field.default,
                            choices=meta['choices'], help=f'{meta["description"]} (default {field.default})')


def knobs_from_args(parser: argparse.ArgumentParser, cls, args, **fixed):
    """The dataclass from parsed flags; an invalid value ends in parser.error (one line, exit 2)."""
    values = {f.name: getattr(args, f.name) for f in knobs(cls) if hasattr(args, f.name)}
    try:
        return cls(**{**values, **fixed})
    except ValueError as exc:
        parser.error(str(exc))
