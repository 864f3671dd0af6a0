"""Named model/training presets from config/presets.yaml: `base` holds every field, a named preset overlays
what differs."""
from dataclasses import dataclass, asdict, fields
from pathlib import Path

import yaml

from adawm_planner.share import package_share

PRESETS_FILE = package_share() / 'config' / 'presets.yaml'


@dataclass(frozen=True)
class Preset:
    name: str
    deter: int
    hidden: int
    stoch: int
    classes: int
    unimix: float
    cnn_depth: int
    units: int
    layers: int
    bins: int
    free_nats: float
    dyn_scale: float
    rep_scale: float
    bev_scale: float
    ego_scale: float
    reward_scale: float
    cont_scale: float
    model_lr: float
    grad_clip: float
    horizon: int
    gamma: float
    lam: float
    entropy: float
    actor_lr: float
    critic_lr: float
    slow_critic_decay: float
    return_decay: float
    plan_candidates: int
    plan_horizon: int
    plan_prior_weight: float
    batch: int
    seq_len: int
    train_ratio: float
    replay_capacity: int
    prefill: int
    # last, with a default: checkpoints saved before it existed load with the loss they were trained with
    terminal_weight: float = 1.0

    def to_dict(self):
        return asdict(self)

    def replace(self, **changes):
        return Preset(**{**asdict(self), **changes})


BASE = 'base'


def preset_names(path=PRESETS_FILE):
    return [name for name in yaml.safe_load(Path(path).read_text()) if name != BASE]


def load_preset(name, path=PRESETS_FILE, **overrides):
    presets = yaml.safe_load(Path(path).read_text())
    if name == BASE or name not in presets:
        raise KeyError(f'unknown preset {name!r}; known: {", ".join(preset_names(path))}')
    values = {**presets[BASE], **(presets[name] or {}), **overrides, 'name': name}
    expected = {f.name for f in fields(Preset)}
    missing, extra = expected - set(values), set(values) - expected
    if missing or extra:
        raise ValueError(f'preset {name!r}: missing {sorted(missing)}, unknown {sorted(extra)}')
    return Preset(**values)


def preset_from_dict(values):
    return Preset(**values)
