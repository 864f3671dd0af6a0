"""What a checkpoint promises about its inputs and outputs, so a node needs nothing but the checkpoint:
the step period the model was trained at, its action table and vehicle model, the reward's settings, the
BEV raster's geometry and the ego vector's features. Saved in model.json under "contract"."""
from __future__ import annotations

import dataclasses
import math

from adawm_planner.core.actions import MAX_STEER_ANGLE, PEDAL_ACCELERATION, WHEELBASE, ActionTable
from adawm_planner.core.bev import BevSpec
from adawm_planner.core.metrics import EGO_FEATURES


@dataclasses.dataclass(frozen=True)
class Contract:
    step_period: float                      # s of simulation per model step
    accelerations: tuple[float, ...]        # m/s² of the discrete acceleration choices
    steers: tuple[float, ...]               # CARLA steer values of the discrete steering choices
    v_des: float                            # m/s the reward's speed term aims for
    bev: BevSpec = BevSpec()
    ego_features: tuple[str, ...] = EGO_FEATURES
    pedal_acceleration: float = PEDAL_ACCELERATION
    max_steer_angle: float = MAX_STEER_ANGLE
    wheelbase: float = WHEELBASE

    def __post_init__(self):
        if not self.step_period > 0:
            raise ValueError(f'step_period must be positive, got {self.step_period}')

    def action_table(self) -> ActionTable:
        return ActionTable(self.accelerations, self.steers, self.pedal_acceleration, self.max_steer_angle,
                           self.wheelbase)

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values.update(accelerations=list(self.accelerations), steers=list(self.steers),
                      ego_features=list(self.ego_features))
        return values

    @classmethod
    def from_dict(cls, values) -> 'Contract':
        """Raises ValueError (with the reason) for a contract that is incomplete, unknown or not numbers."""
        if not isinstance(values, dict):
            raise ValueError(f'contract must be a mapping, got {type(values).__name__}')
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f'unknown contract fields {sorted(unknown)}')
        number = lambda x: isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
        try:
            values = dict(values, accelerations=tuple(values['accelerations']), steers=tuple(values['steers']))
            if 'bev' in values:
                values['bev'] = BevSpec(**values['bev'])
            if 'ego_features' in values:
                values['ego_features'] = tuple(str(f) for f in values['ego_features'])
            numbers = [*values['accelerations'], *values['steers'], *(values[k] for k in (
                'step_period', 'v_des', 'pedal_acceleration', 'max_steer_angle', 'wheelbase') if k in values)]
            bev = values.get('bev', BevSpec())
            if not (values['accelerations'] and values['steers'] and all(map(number, numbers))
                    and all(map(number, dataclasses.astuple(bev))) and min(dataclasses.astuple(bev)) > 0):
                raise ValueError('its numbers are missing, not finite or not positive where they must be')
            return cls(**values)
        except (KeyError, TypeError) as exc:
            raise ValueError(f'contract is incomplete or malformed: {exc!r}') from None
