"""Fuzzing what crosses a trust boundary: adapter bytes and metadata, checkpoint JSON, launch XML, and the
values of every knob a node declares. Zero unhandled exceptions; every refusal is its module's error type
with a reason."""
import json
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adawm_planner.core import knobs, lora
from adawm_planner.core.checkpoint import CheckpointError, load_checkpoint
from adawm_planner.core.config import CommandConfig, FinetuneConfig, LifecycleConfig, PlannerConfig
from test_lora import adapted, make_base, meta_for, train_a_little

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                           max_leaves=12)


@pytest.fixture(scope='module')
def slot_and_adapter():
    base = make_base()
    slot = lora.AdapterSlot(base, 'policy', key=b'k' * 32)
    model = train_a_little(adapted(make_base()))
    return slot, lora.export(model, meta_for(make_base()))


def header_blob(header: dict, payload: bytes = b'') -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack('<Q', len(raw)) + raw + payload


@FUZZ
@given(data=st.data())
def test_adapter_bytes_and_metadata(slot_and_adapter, data):
    slot, good = slot_and_adapter
    kind = data.draw(st.sampled_from(['flip bytes', 'truncate', 'header', 'metadata', 'random']))
    blob = bytearray(good.blob)
    if kind == 'flip bytes':
        for i in data.draw(st.lists(st.integers(0, len(blob) - 1), min_size=1, max_size=8)):
            blob[i] = data.draw(st.integers(0, 255))
    elif kind == 'truncate':
        blob = blob[:data.draw(st.integers(0, len(blob) - 1))]
    elif kind == 'header':   # tensors of any dtype, shape and offsets the header claims
        name = data.draw(st.sampled_from(sorted(good.tensors)))
        entry = {'dtype': data.draw(st.sampled_from(['F32', 'F16', 'BF16', 'I64', 'U8', 'BOOL', 'F64', 'X9'])),
                 'shape': data.draw(st.lists(st.integers(-2, 10 ** 6), max_size=3)),
                 'data_offsets': data.draw(st.lists(st.integers(-5, 10 ** 7), min_size=0, max_size=3))}
        blob = bytearray(header_blob({name: entry, '__metadata__': good.meta.to_strings()}, bytes(64)))
    elif kind == 'metadata':
        meta = {**good.meta.to_strings(), **data.draw(st.dictionaries(
            st.sampled_from(['format', 'target', 'version', 'rank', 'alpha', 'target_modules', 'base_checksum', 'x']),
            st.text(max_size=30), max_size=4))}
        blob = bytearray(_with_metadata(good, meta))
    else:
        blob = bytearray(data.draw(st.binary(max_size=512)))
    blob = bytes(blob)
    import hashlib
    sha = data.draw(st.sampled_from([hashlib.sha256(blob).hexdigest(), good.sha256, 'zz', '']))
    version = data.draw(st.sampled_from([good.meta.version, 0, -1, 2 ** 40]))
    signature = data.draw(st.sampled_from([lora.sign(blob, b'k' * 32), None, 'f' * 64, '']))
    try:
        slot.prepare(blob, sha, version, signature)
    except lora.AdapterError as exc:
        assert str(exc)


def _with_metadata(adapter, meta):
    from safetensors.torch import save
    return save({k: v.contiguous() for k, v in adapter.tensors.items()}, metadata=meta)


@FUZZ
@given(mutation=st.dictionaries(st.sampled_from(['format', 'preset', 'spec', 'contract', 'sha256', 'task', 'step']),
                                json_values, min_size=1, max_size=3),
       drop=st.lists(st.sampled_from(['format', 'preset', 'spec', 'contract', 'sha256']), max_size=2),
       nested=st.tuples(st.sampled_from(['preset', 'spec', 'contract']), st.text(max_size=12), json_values))
def test_checkpoint_json(tiny_checkpoint, tmp_path_factory, mutation, drop, nested):
    directory = tmp_path_factory.mktemp('ckpt')
    for name in ('model.safetensors', 'replay.safetensors'):
        (directory / name).write_bytes((tiny_checkpoint / name).read_bytes())
    meta = json.loads((tiny_checkpoint / 'model.json').read_text())
    section, key, value = nested
    if isinstance(meta.get(section), dict):
        meta[section][key] = value
    meta.update(mutation)
    for key in drop:
        meta.pop(key, None)
    (directory / 'model.json').write_text(json.dumps(meta))
    try:
        load_checkpoint(directory)
    except CheckpointError as exc:
        assert str(exc)


@FUZZ
@given(text=st.one_of(st.text(max_size=300), st.builds(
    lambda tags, attrs: '<launch>' + ''.join(f'<{t} {a}/>' for t, a in zip(tags, attrs)) + '</launch>',
    st.lists(st.sampled_from(['arg', 'let', 'node', 'group', 'include', 'executable']), max_size=5),
    st.lists(st.sampled_from(['name="a"', 'name="a" default="$(var a)"', 'value="$(eval 1 +)"', 'if="maybe"',
                              'pkg="p" exec="e"', 'file="/nonexistent.xml"', '']), max_size=5)), st.builds(
    lambda children: '<launch><node pkg="launch_probe" exec="talker">' + ''.join(children) + '</node></launch>',
    st.lists(st.sampled_from(['<param name="p" value="[1, 2"/>', '<param name="p" value="{a: }: b"/>',
                              '<param from="/nonexistent.yaml"/>', '<remap from="a"/>', '<param value="3"/>',
                              '<executable/>', '<param name="q" value="$(var nope)"/>']), max_size=3)), st.builds(
    lambda tags, attrs: '<launch>' + ''.join(f'<{t} {a}/>' for t, a in zip(tags, attrs)) + '</launch>',
    st.lists(st.sampled_from(['arg', 'let', 'node', 'group', 'include', 'param', 'remap', 'executable', 'choice']),
             max_size=5),
    st.lists(st.sampled_from(['name="a"', 'name="a" default="$(var a)"', 'value="$(eval 1 +)"', 'if="maybe"',
                              'pkg="p" exec="e"', 'file="/nonexistent.xml"', 'name="$(env NOPE)"', '',
                              'name="b" value="$(find-pkg-share no_such_pkg)"', 'unless="$(var zz)"']), max_size=5))),
       arguments=st.dictionaries(st.sampled_from(['a', 'b', 'sim']), st.text(max_size=8), max_size=2))
def test_launch_xml(tmp_path_factory, text, arguments):
    from adawm_planner import launch_runner
    path = tmp_path_factory.mktemp('launch') / 'fuzz.launch.xml'
    path.write_text(text)
    try:
        for spec in launch_runner.load(path, arguments):
            spec.command(path.parent)
    except launch_runner.LaunchError as exc:
        assert str(exc)


KNOB_FIELDS = [field for cls in (FinetuneConfig, LifecycleConfig, PlannerConfig, CommandConfig)
               for field in knobs.knobs(cls)]
any_value = st.one_of(st.none(), st.booleans(), st.integers(-10 ** 12, 10 ** 12), st.floats(allow_nan=True),
                      st.text(max_size=16), st.lists(st.integers(0, 255), max_size=4))


@FUZZ
@given(field=st.sampled_from(KNOB_FIELDS), value=any_value)
def test_every_knob_value_is_checked_never_raises(field, value):
    reason = knobs.problem(field, value)
    assert reason is None or (isinstance(reason, str) and field.name in reason)


@pytest.mark.parametrize('cls', [FinetuneConfig, LifecycleConfig, PlannerConfig, CommandConfig])
def test_a_valid_default_and_an_invalid_value_per_knob(cls):
    cls()   # the defaults are valid
    for field in knobs.knobs(cls):
        bad = 'not a number' if type(field.default) is not str else 12
        with pytest.raises(ValueError, match=field.name):
            cls(**{field.name: bad})
