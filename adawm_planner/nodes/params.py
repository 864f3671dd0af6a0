"""ROS parameters from knob schemas (core.knobs), the way ros2/demos does parameters: every parameter is
declared with a descriptor (meaning, range, read-only), every value — start values from YAML or the command
line too — is checked by the node's on_set callback before it lands, and the change is applied afterwards:
in a post-set callback where rclpy has them (Iron and later), else by the on_set callback once the whole call
has passed (Humble: with a single on_set callback its success is final)."""
from __future__ import annotations

import dataclasses

from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType,
                                SetParametersResult)
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException

from adawm_planner.core.knobs import knobs, problem

ADAPTER_PARAMETERS = {   # per target: adapter.<target>.<name>, set together in one atomic call
    'data': ([], ParameterDescriptor(type=ParameterType.PARAMETER_BYTE_ARRAY,   # rclpy: a list of 1-byte bytes
                                     description='the adapter\'s safetensors bytes')),
    'sha256': ('', ParameterDescriptor(description='sha256 of data (hex)')),
    'version': (0, ParameterDescriptor(description='the adapter\'s version (its metadata must agree)')),
    'signature': ('', ParameterDescriptor(description='HMAC-SHA256 of data, when the planner has a key')),
    'path': ('', ParameterDescriptor(description='an adapter file inside adapter_dir, instead of data'))}
FLOAT_MAX = 1e9   # "no upper bound" in a descriptor (what a person reads in its range)
INT_MAX = 2 ** 31 - 1


def descriptor(field: dataclasses.Field, read_only: bool) -> ParameterDescriptor:
    m, kind = field.metadata, type(field.default)
    d = ParameterDescriptor(description=m['description'], read_only=read_only)
    if m['choices'] is not None:
        d.additional_constraints = 'one of: ' + ', '.join(map(str, m['choices']))
    if kind is int and (m['low'] is not None or m['high'] is not None):
        d.integer_range = [IntegerRange(from_value=int(m['low'] if m['low'] is not None else -INT_MAX),
                                        to_value=int(m['high'] if m['high'] is not None else INT_MAX), step=0)]
    elif kind is float and (m['low'] is not None or m['high'] is not None or m['positive']):
        low = m['low'] if m['low'] is not None else (0.0 if m['positive'] else -FLOAT_MAX)
        d.floating_point_range = [FloatingPointRange(from_value=float(low),
                                                     to_value=float(m['high'] if m['high'] is not None else FLOAT_MAX),
                                                     step=0.0)]
    return d


def declare_knobs(node, cls, read_only: bool) -> dict[str, dataclasses.Field]:
    """Declares a parameter per knob of `cls`; returns the fields by parameter name."""
    fields = {f.name: f for f in knobs(cls)}
    for name, field in fields.items():
        node.declare_parameter(name, field.default, descriptor(field, read_only))
    return fields


def knob_values(node, cls):
    return cls(**{f.name: node.get_parameter(f.name).value for f in knobs(cls)})


def invalid(fields: dict[str, dataclasses.Field], params) -> str | None:
    """The reason the first parameter of `params` that is a knob in `fields` is invalid, or None."""
    for param in params:
        if param.name in fields:
            reason = problem(fields[param.name], param.value)
            if reason:
                return reason
    return None


def checker(fields: dict[str, dataclasses.Field]):
    """An on_set callback that checks knobs (for nodes whose parameters are all set at start)."""
    def callback(parameters) -> SetParametersResult:
        reason = invalid(fields, parameters)
        return SetParametersResult(successful=reason is None, reason=reason or '')
    return callback


def has_post_set(node) -> bool:
    return hasattr(node, 'add_post_set_parameters_callback')


START_ERRORS = (InvalidParameterValueException, InvalidParameterTypeException, ValueError)


def start_error(node_name: str, exc: Exception) -> SystemExit:
    """One line for a parameter refused at start: the reason, without rclpy's wrapping around it."""
    text = str(exc)
    if 'Reason: ' in text:
        text = text.split('Reason: ', 1)[1].rsplit(': ', 1)[0]
    return SystemExit(f'{node_name}: invalid parameter: {text}')
