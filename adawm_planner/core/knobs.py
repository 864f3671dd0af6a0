"""One definition per knob: a dataclass field states its default, what it means and which values are valid,
once. The ROS nodes declare their parameters from it (descriptors with ranges, validated in on_set), the
command line builds its flags from it, and constructing the dataclass checks every value."""
from __future__ import annotations

import dataclasses
import math


def knob(default, description: str, *, low=None, high=None, positive=False, choices=None):
    """A dataclass field with its meaning and valid values: `low`/`high` inclusive bounds, `positive` for a
    strictly positive number, `choices` for an enumeration."""
    return dataclasses.field(default=default, metadata={
        'description': description, 'low': low, 'high': high, 'positive': positive,
        'choices': tuple(choices) if choices is not None else None})


def knobs(cls) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if 'description' in f.metadata]


def problem(field: dataclasses.Field, value) -> str | None:
    """Why `value` is not valid for `field`, or None. Types must match the default's (ints pass as floats)."""
    kind, m, name = type(field.default), field.metadata, field.name
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        return f'{name} must be {kind.__name__}, got {type(value).__name__} {value!r}'
    if kind is float and not math.isfinite(value):
        return f'{name} must be finite, got {value}'
    if m['choices'] is not None and value not in m['choices']:
        return f'{name} must be one of {", ".join(map(str, m["choices"]))}; got {value!r}'
    if m['positive'] and not value > 0:
        return f'{name} must be positive, got {value}'
    if m['low'] is not None and value < m['low']:
        return f'{name} must be at least {m["low"]}, got {value}'
    if m['high'] is not None and value > m['high']:
        return f'{name} must be at most {m["high"]}, got {value}'
    return None


def check(obj) -> None:
    """Raises ValueError naming the first invalid knob of a dataclass instance."""
    for field in knobs(type(obj)):
        reason = problem(field, getattr(obj, field.name))
        if reason:
            raise ValueError(reason)
