"""LoRA adapters on a frozen base, through peft, and their one file format.

An adapter is a safetensors blob: the LoRA tensors, plus string metadata (format, target, version, rank,
alpha, target modules, base checksum). Its sha256 is taken over the whole blob. The same bytes travel in a
ROS byte-array parameter or sit on disk beside a JSON sidecar holding the metadata and the sha256, so the
planner validates them the same way whichever way they came. Nothing here unpickles anything.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import hmac
import json
import math
import os
import secrets
from pathlib import Path

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

FORMAT = 'adawm-lora/1'
TARGETS = ('model', 'policy')
MAX_ADAPTER_BYTES = 64 * 1024 * 1024


class AdapterError(ValueError):
    """An adapter that must not be applied; the message is the reason, fit to show a person."""


@dataclasses.dataclass(frozen=True)
class AdapterMeta:
    target: str            # 'model' (world model) or 'policy' (actor + critic)
    version: int           # never reused within a run
    rank: int
    alpha: float
    target_modules: tuple[str, ...]
    base_checksum: str     # base_checksum() of the frozen module the adapter was trained on

    def to_strings(self) -> dict[str, str]:
        return {'format': FORMAT, 'target': self.target, 'version': str(self.version), 'rank': str(self.rank),
                'alpha': repr(float(self.alpha)), 'target_modules': json.dumps(list(self.target_modules)),
                'base_checksum': self.base_checksum}

    @classmethod
    def from_strings(cls, meta: dict[str, str]) -> 'AdapterMeta':
        if meta.get('format') != FORMAT:
            raise AdapterError(f"not an AdaWM adapter: format {meta.get('format')!r}, expected {FORMAT!r}")
        try:
            result = cls(target=meta['target'], version=int(meta['version']), rank=int(meta['rank']),
                         alpha=float(meta['alpha']), target_modules=tuple(json.loads(meta['target_modules'])),
                         base_checksum=meta['base_checksum'])
        except (KeyError, ValueError, TypeError) as exc:
            raise AdapterError(f'adapter metadata is incomplete or malformed: {exc!r}') from None
        if result.target not in TARGETS:
            raise AdapterError(f'adapter target {result.target!r} is not one of {TARGETS}')
        if result.rank < 1 or result.version < 0 or not math.isfinite(result.alpha):
            raise AdapterError(f'adapter metadata out of range: rank {result.rank}, version {result.version}, '
                               f'alpha {result.alpha}')
        return result


@dataclasses.dataclass(frozen=True)
class Adapter:
    meta: AdapterMeta
    tensors: dict[str, torch.Tensor]   # LoRA parameter name (as in the adapted module) -> tensor
    blob: bytes                        # the safetensors bytes the tensors were read from
    sha256: str

    @property
    def parameter_count(self) -> int:
        return sum(t.numel() for t in self.tensors.values())


def attach(module: torch.nn.Module, target: str, rank: int, alpha: float,
           target_modules: list[str]) -> torch.nn.Module:
    """Injects LoRA layers named after `target` into `module` in place; only they stay trainable."""
    if target not in TARGETS:
        raise ValueError(f'target must be one of {TARGETS}, got {target!r}')
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=target_modules, lora_dropout=0.0, bias='none')
    return inject_adapter_in_model(config, module, adapter_name=target)


def adapter_tensors(module: torch.nn.Module, target: str) -> dict[str, torch.Tensor]:
    marker = f'.{target}.'
    return {name: p.detach().clone() for name, p in module.named_parameters()
            if '.lora_' in name and marker in name}


def base_checksum(module: torch.nn.Module) -> str:
    """sha256 over the names, shapes and bytes of every non-LoRA parameter, in the plain module's names.

    The same base gives the same checksum before and after LoRA injection (peft renames a wrapped layer's
    weight `x.weight` -> `x.base_layer.weight`; that is undone here). Buffers are left out: running
    statistics such as return-normalisation ranges move during finetuning without changing the base."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.named_parameters()):
        if '.lora_' in name:
            continue
        name = name.replace('.base_layer.', '.')
        data = tensor.detach().cpu().contiguous()
        digest.update(f'{name}:{tuple(data.shape)}:{data.dtype}\n'.encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b'')
    return digest.hexdigest()


def export(module: torch.nn.Module, meta: AdapterMeta) -> Adapter:
    tensors = adapter_tensors(module, meta.target)
    if not tensors:
        raise ValueError(f'module has no LoRA parameters for target {meta.target!r}: call attach() first')
    blob = save_safetensors({k: v.contiguous() for k, v in tensors.items()}, metadata=meta.to_strings())
    return Adapter(meta=meta, tensors=tensors, blob=blob, sha256=hashlib.sha256(blob).hexdigest())


def sign(blob: bytes, key: bytes) -> str:
    return hmac.new(key, blob, hashlib.sha256).hexdigest()


def default_key_file() -> Path:
    """Where the per-user signing key lives unless a node is given one: $ADAWM_KEY_FILE or ~/.adawm/adapter.key."""
    return Path(os.environ.get('ADAWM_KEY_FILE') or Path.home() / '.adawm' / 'adapter.key').expanduser()


def read_key(path: str | Path) -> bytes:
    key = Path(path).read_bytes().strip()
    if len(key) < 16:
        raise AdapterError(f'adapter key in {path} is shorter than 16 bytes')
    return key


def load_or_create_key(path: str | Path) -> tuple[bytes, bool]:
    """The HMAC key in `path`, created when missing: 32 random bytes as hex, mode 0600, written to a temp file
    and linked into place, so nodes starting together end with the same key. Returns (key, created)."""
    path = Path(path).expanduser()
    created = False
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f'.{path.name}.{secrets.token_hex(8)}.tmp')
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, 'w') as f:
                f.write(secrets.token_hex(32) + '\n')
                f.flush()
                os.fsync(f.fileno())
            os.link(tmp, path)   # fails if another process got there first: then its key is the key
            created = True
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    return read_key(path), created


def parse(blob: bytes, *, expected_sha256: str | None = None, key: bytes | None = None,
          signature: str | None = None, max_bytes: int = MAX_ADAPTER_BYTES) -> Adapter:
    """Reads adapter bytes, checking integrity only (size, sha256, signature, format, finite values).

    Whether it fits a particular module is check_fits()'s job."""
    if not isinstance(blob, (bytes, bytearray)):
        raise AdapterError(f'adapter must be bytes, got {type(blob).__name__}')
    if len(blob) > max_bytes:
        raise AdapterError(f'adapter is {len(blob)} bytes, over the limit of {max_bytes}')
    blob = bytes(blob)
    digest = hashlib.sha256(blob).hexdigest()
    if expected_sha256 is not None and digest != expected_sha256.lower():
        raise AdapterError(f'sha256 mismatch: got {digest}, expected {expected_sha256}')
    if key is not None:
        if not signature:
            raise AdapterError('adapter is unsigned, and this planner only accepts signed adapters')
        if not hmac.compare_digest(sign(blob, key), signature.lower()):
            raise AdapterError('adapter signature does not verify with the configured key')
    try:
        tensors = load_safetensors(blob)
        meta_strings = _safetensors_metadata(blob)
    except (SafetensorError, ValueError, json.JSONDecodeError) as exc:
        raise AdapterError(f'not a valid safetensors file: {exc}') from None
    meta = AdapterMeta.from_strings(meta_strings)
    for name, tensor in tensors.items():
        if not tensor.is_floating_point():
            raise AdapterError(f'tensor {name} has dtype {tensor.dtype}, expected a floating-point type')
        if not torch.isfinite(tensor).all():
            raise AdapterError(f'tensor {name} holds NaN or Inf values')
    return Adapter(meta=meta, tensors=tensors, blob=blob, sha256=digest)


def _safetensors_metadata(blob: bytes) -> dict[str, str]:
    header_len = int.from_bytes(blob[:8], 'little')
    header = json.loads(blob[8:8 + header_len])
    return header.get('__metadata__', {}) or {}


def check_fits(adapter: Adapter, module: torch.nn.Module) -> None:
    """Raises AdapterError unless the adapter was made for exactly this base and this LoRA layout."""
    checksum = base_checksum(module)
    if adapter.meta.base_checksum != checksum:
        raise AdapterError(f'adapter was trained on base {adapter.meta.base_checksum[:12]}, '
                           f'this model is {checksum[:12]}')
    expected = {name: p for name, p in module.named_parameters()
                if '.lora_' in name and f'.{adapter.meta.target}.' in name}
    if not expected:
        raise AdapterError(f'this model has no {adapter.meta.target} LoRA layers to load into')
    missing, unexpected = expected.keys() - adapter.tensors.keys(), adapter.tensors.keys() - expected.keys()
    if missing or unexpected:
        raise AdapterError(f'adapter tensors do not match the model: missing {sorted(missing)[:3]}, '
                           f'unexpected {sorted(unexpected)[:3]}')
    for name, tensor in adapter.tensors.items():
        if tensor.shape != expected[name].shape or tensor.dtype != expected[name].dtype:
            raise AdapterError(f'tensor {name} is {tuple(tensor.shape)} {tensor.dtype}, the model needs '
                               f'{tuple(expected[name].shape)} {expected[name].dtype}')


@torch.no_grad()
def load_into(module: torch.nn.Module, adapter: Adapter) -> None:
    """Copies the adapter's tensors into the module's LoRA parameters, after check_fits()."""
    check_fits(adapter, module)
    params = dict(module.named_parameters())
    for name, tensor in adapter.tensors.items():
        params[name].copy_(tensor)


@torch.no_grad()
def reset(module: torch.nn.Module, target: str) -> None:
    """Back to the plain base: LoRA's B factors to zero makes every adapted layer its base layer."""
    for name, p in module.named_parameters():
        if '.lora_B.' in name and f'.{target}.' in name:
            p.zero_()


def merged_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The base weights with every LoRA update folded in, under the plain module's names."""
    merged = copy.deepcopy(module)
    for layer in merged.modules():
        if isinstance(layer, LoraLayer):
            layer.merge()
    return {name.replace('.base_layer.', '.'): t.detach().clone()
            for name, t in merged.state_dict().items() if '.lora_' not in name}


def trainable_fraction(module: torch.nn.Module) -> tuple[int, float]:
    """(trainable parameter count, trainable / base parameters) — base excludes the LoRA parameters."""
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    base = sum(p.numel() for n, p in module.named_parameters() if '.lora_' not in n)
    return trainable, trainable / max(base, 1)


def save(adapter: Adapter, path: str | Path) -> Path:
    """Writes BLOB.safetensors and BLOB.json atomically (temp file, fsync, rename): never a partial file."""
    path = Path(path).with_suffix('.safetensors')
    sidecar = {**adapter.meta.to_strings(), 'sha256': adapter.sha256, 'parameters': adapter.parameter_count}
    _atomic_write(path, adapter.blob)
    _atomic_write(path.with_suffix('.json'), json.dumps(sidecar, indent=2).encode())
    return path


def load(path: str | Path, **parse_kwargs) -> Adapter:
    """Reads an adapter from disk, checking it against its JSON sidecar's sha256 when one is there."""
    path = Path(path)
    sidecar = path.with_suffix('.json')
    expected = parse_kwargs.pop('expected_sha256', None)
    if expected is None and sidecar.exists():
        try:
            expected = json.loads(sidecar.read_text())['sha256']
        except (ValueError, KeyError) as exc:
            raise AdapterError(f'{sidecar.name} is not a valid adapter sidecar: {exc!r}') from None
    size = path.stat().st_size
    limit = parse_kwargs.get('max_bytes', MAX_ADAPTER_BYTES)
    if size > limit:
        raise AdapterError(f'{path.name} is {size} bytes, over the limit of {limit}')
    return parse(path.read_bytes(), expected_sha256=expected, **parse_kwargs)


def _atomic_write(path: Path, data: bytes) -> None:
    """Temp file, fsync, rename: a reader sees the old file or the whole new one, never a part (disk full,
    a kill mid-write); a failed write leaves no temp file behind."""
    tmp = path.with_name(f'.{path.name}.tmp')
    try:
        with open(tmp, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class AdapterSlot:
    """One side of a running agent (world model or policy): its pristine base, and which adapter is in force.

    `prepare` does all the checking and builds the adapted module off to the side, so the caller can swap
    it in between two planning ticks and never runs half-loaded weights."""

    def __init__(self, base_module: torch.nn.Module, target: str, key: bytes | None = None,
                 max_bytes: int = MAX_ADAPTER_BYTES):
        if target not in TARGETS:
            raise ValueError(f'target must be one of {TARGETS}, got {target!r}')
        self.base = copy.deepcopy(base_module).requires_grad_(False)
        self.target, self.key, self.max_bytes = target, key, max_bytes
        self.checksum = base_checksum(self.base)
        self.version, self.sha256 = 0, ''

    def prepare(self, blob: bytes, sha256: str, version: int,
                signature: str | None = None) -> tuple[torch.nn.Module, Adapter]:
        adapter = parse(blob, expected_sha256=sha256, key=self.key, signature=signature, max_bytes=self.max_bytes)
        meta = adapter.meta
        if meta.target != self.target:
            raise AdapterError(f'adapter targets the {meta.target}, this slot holds the {self.target}')
        if meta.version != version:
            raise AdapterError(f'version parameter says {version}, the adapter itself says {meta.version}')
        if meta.base_checksum != self.checksum:
            raise AdapterError(f'adapter was trained on base {meta.base_checksum[:12]}, '
                               f'this planner runs {self.checksum[:12]}')
        module = copy.deepcopy(self.base)
        try:
            attach(module, self.target, meta.rank, meta.alpha, list(meta.target_modules))
        except ValueError as exc:   # peft: target modules that this base does not have
            raise AdapterError(f'adapter layout does not fit this model: {str(exc)[:200]}') from None
        load_into(module, adapter)
        return module.eval(), adapter

    def prepare_fields(self, fields: dict, allowed_dir: str) -> tuple[torch.nn.Module, Adapter]:
        """`prepare` from the fields an adapter travels in: data (bytes, or a list of 1-byte bytes as ROS byte
        arrays come) or path (a file inside `allowed_dir`), with sha256, version and signature."""
        if not (fields.get('data') or fields.get('path')):
            raise AdapterError(f'set adapter.{self.target}.data (or .path) together with .sha256 and .version '
                               'in one call')
        if fields.get('path'):
            blob = self.read_file(fields['path'], allowed_dir or '/nonexistent-adapter-dir')
        else:
            data = fields.get('data') or b''
            blob = data if isinstance(data, (bytes, bytearray)) else b''.join(data)
        if not isinstance(fields.get('version'), int) or not isinstance(fields.get('sha256'), str):
            raise AdapterError('the adapter\'s version must be an integer and its sha256 a string')
        return self.prepare(blob, fields['sha256'], fields['version'], fields.get('signature') or None)

    def read_file(self, path: str | Path, allowed_dir: str | Path) -> bytes:
        """Bytes of an adapter file, refusing anything outside `allowed_dir` or over the size limit."""
        path, allowed = Path(path).resolve(), Path(allowed_dir).resolve()
        if allowed not in path.parents:
            raise AdapterError(f'{path} is outside the adapter directory {allowed}')
        if not path.is_file():
            raise AdapterError(f'{path} does not exist')
        if path.stat().st_size > self.max_bytes:
            raise AdapterError(f'{path.name} is {path.stat().st_size} bytes, over the limit of {self.max_bytes}')
        return path.read_bytes()

    def applied(self, adapter: Adapter | None) -> None:
        self.version, self.sha256 = (adapter.meta.version, adapter.sha256) if adapter else (0, '')
