"""LoRA adapters through real peft: frozen base, adapter-only training, the file format and its refusals."""
import hashlib
import json

import pytest
import torch
from torch import nn

from adawm_planner.core import lora

TARGETS = ['inp', 'out']


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(6, 16)
        self.out = nn.Linear(16, 3)

    def forward(self, x):
        return self.out(torch.tanh(self.inp(x)))


def make_base(seed=0):
    torch.manual_seed(seed)
    return Toy()


def adapted(base, rank=4, target='policy'):
    model = lora.attach(base, target, rank=rank, alpha=8, target_modules=TARGETS)
    return model


def train_a_little(model, steps=5, seed=1):
    torch.manual_seed(seed)
    x, y = torch.randn(32, 6), torch.randn(32, 3)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        loss = (model(x) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def meta_for(model, version=1, rank=4, target='policy'):
    return lora.AdapterMeta(target=target, version=version, rank=rank, alpha=8.0, target_modules=tuple(TARGETS),
                            base_checksum=lora.base_checksum(model))


def test_lora_trains_only_adapter_and_leaves_base_bit_identical():
    base_state = {k: v.clone() for k, v in make_base().state_dict().items()}
    model = train_a_little(adapted(make_base()))
    for name, p in model.named_parameters():
        assert p.requires_grad == ('.lora_' in name), name
    plain = {k.replace('.base_layer.', '.'): v for k, v in model.state_dict().items() if '.lora_' not in k}
    assert plain.keys() == base_state.keys()
    for k in base_state:
        assert torch.equal(plain[k], base_state[k]), k
    assert any(v.abs().sum() > 0 for k, v in lora.adapter_tensors(model, 'policy').items() if 'lora_B' in k)
    count, fraction = lora.trainable_fraction(model)
    base_count = sum(v.numel() for v in base_state.values())
    assert count == 4 * (6 + 16) + 4 * (16 + 3) and fraction == pytest.approx(count / base_count)


def test_base_checksum_ignores_injection_but_not_weights():
    base = make_base()
    before = lora.base_checksum(base)
    assert lora.base_checksum(adapted(base)) == before
    assert lora.base_checksum(make_base(seed=5)) != before


def test_export_load_and_merge_reproduce_outputs(tmp_path):
    trained = train_a_little(adapted(make_base()))
    x = torch.randn(8, 6)
    expected = trained(x)
    adapter = lora.export(trained, meta_for(trained))
    path = lora.save(adapter, tmp_path / 'policy_v1')
    sidecar = json.loads(path.with_suffix('.json').read_text())
    assert sidecar['sha256'] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert sidecar['rank'] == '4' and sidecar['target'] == 'policy'

    fresh = adapted(make_base())
    assert not torch.allclose(fresh(x), expected)
    lora.load_into(fresh, lora.load(path))
    assert torch.equal(fresh(x), expected)

    plain = make_base(seed=3)
    plain.load_state_dict(lora.merged_state_dict(trained))
    assert torch.allclose(plain(x), expected, atol=1e-5)

    lora.reset(fresh, 'policy')
    assert torch.equal(fresh(x), make_base()(x))


def refusal(blob, model=None, **kwargs):
    with pytest.raises(lora.AdapterError) as info:
        adapter = lora.parse(blob, **kwargs)
        if model is not None:
            lora.check_fits(adapter, model)
    return str(info.value)


def test_malformed_and_mismatched_adapters_are_refused_with_a_reason():
    trained = train_a_little(adapted(make_base()))
    good = lora.export(trained, meta_for(trained))
    target = adapted(make_base())

    assert 'not a valid safetensors' in refusal(b'\x00' * 7 + b'garbage' * 10)
    assert 'sha256 mismatch' in refusal(good.blob, expected_sha256='0' * 64)
    assert 'over the limit' in refusal(good.blob, max_bytes=100)
    assert 'must be bytes' in refusal('a string')

    other_base = adapted(make_base(seed=9))
    assert 'trained on base' in refusal(good.blob, other_base)

    rank2 = train_a_little(adapted(make_base(), rank=2))
    assert 'the model needs' in refusal(lora.export(rank2, meta_for(rank2, rank=2)).blob, target)

    poisoned = dict(good.tensors)
    name = next(iter(poisoned))
    poisoned[name] = poisoned[name].clone()
    poisoned[name][0, 0] = float('nan')
    from safetensors.torch import save
    assert 'NaN or Inf' in refusal(save(poisoned, metadata=good.meta.to_strings()))
    assert 'format' in refusal(save(dict(good.tensors), metadata={'format': 'something-else'}))
    assert 'malformed' in refusal(save(dict(good.tensors), metadata={'format': lora.FORMAT, 'target': 'policy'}))

    lora.check_fits(lora.parse(good.blob, expected_sha256=good.sha256), target)  # the good one still fits


def test_signature_required_when_a_key_is_configured():
    trained = train_a_little(adapted(make_base()))
    good = lora.export(trained, meta_for(trained))
    key = b'shared-secret'
    assert 'unsigned' in refusal(good.blob, key=key)
    assert 'does not verify' in refusal(good.blob, key=key, signature=lora.sign(good.blob, b'wrong-key'))
    assert lora.parse(good.blob, key=key, signature=lora.sign(good.blob, key)).sha256 == good.sha256


def test_adapter_slot_builds_the_adapted_module_off_to_the_side(tmp_path):
    trained = train_a_little(adapted(make_base()))
    adapter = lora.export(trained, meta_for(trained, version=3))
    running = make_base()
    slot = lora.AdapterSlot(running, 'policy')
    x = torch.randn(4, 6)
    before = running(x)
    module, parsed = slot.prepare(adapter.blob, adapter.sha256, version=3)
    assert torch.equal(running(x), before)            # nothing touched until the caller swaps
    assert torch.allclose(module(x), trained(x))
    slot.applied(parsed)
    assert (slot.version, slot.sha256) == (3, adapter.sha256)

    with pytest.raises(lora.AdapterError, match='version parameter says 4'):
        slot.prepare(adapter.blob, adapter.sha256, version=4)
    with pytest.raises(lora.AdapterError, match='slot holds the model'):
        lora.AdapterSlot(running, 'model').prepare(adapter.blob, adapter.sha256, version=3)
    (tmp_path / 'ok').mkdir()
    path = lora.save(adapter, tmp_path / 'ok' / 'a')
    assert slot.read_file(path, tmp_path / 'ok') == adapter.blob
    with pytest.raises(lora.AdapterError, match='outside the adapter directory'):
        slot.read_file(tmp_path / 'ok' / '..' / 'elsewhere.safetensors', tmp_path / 'ok')


def test_a_failed_write_leaves_no_partial_adapter(tmp_path, monkeypatch):
    trained = train_a_little(adapted(make_base()))
    adapter = lora.export(trained, meta_for(trained))
    lora.save(adapter, tmp_path / 'a')
    before = (tmp_path / 'a.safetensors').read_bytes()

    def disk_full(fd):
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(lora.os, 'fsync', disk_full)
    newer = lora.export(trained, meta_for(trained, version=2))
    with pytest.raises(OSError, match='No space left'):
        lora.save(newer, tmp_path / 'a')
    assert (tmp_path / 'a.safetensors').read_bytes() == before      # the old adapter, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a.json', 'a.safetensors']   # no temp files
    assert lora.load(tmp_path / 'a.safetensors').meta.version == 1


def test_the_per_user_key_is_created_once_private_and_shared(tmp_path):
    import stat
    from concurrent.futures import ThreadPoolExecutor
    path = tmp_path / 'keys' / 'adapter.key'
    with ThreadPoolExecutor(4) as pool:   # nodes starting together
        results = list(pool.map(lambda _: lora.load_or_create_key(path), range(8)))
    assert len({key for key, _ in results}) == 1 and sum(created for _, created in results) == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(results[0][0]) >= 32
    assert lora.load_or_create_key(path) == (results[0][0], False)
    assert not list(path.parent.glob('.*tmp'))
