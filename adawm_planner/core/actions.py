"""The model's discrete actions as CARLA controls and back, through the vehicle model the model was trained
with (CarDreamer's Discrete(15) = 3 accelerations × 5 steers).

Index a -> acceleration accelerations[a // 5], steer steers[a % 5]; throttle = clip(acc / pedal, 0, 1) and
brake = clip(-acc / pedal, 0, 1), where `pedal_acceleration` is the m/s² a full pedal gives. A steer of ±1
turns the front wheels by ±`max_steer_angle` rad (+ = right, as CARLA). These numbers travel in a
checkpoint's contract, so a node turns actions into commands without the simulator.
"""
from __future__ import annotations

import math

import numpy as np

PEDAL_ACCELERATION = 3.0       # m/s² at full throttle (and deceleration at full brake): CarDreamer's a/3 mapping inverted
MAX_STEER_ANGLE = math.pi / 4  # rad of front-wheel angle at steer ±1 (highway-env's own steering range)
WHEELBASE = 5.0                # m: the embedded simulator's kinematic bicycle turns about half of it


def discrete_to_control(action: int, accelerations, steers,
                        pedal_acceleration: float = PEDAL_ACCELERATION) -> tuple[float, float, float]:
    """(throttle, steer, brake) of a discrete action."""
    acc, steer = accelerations[int(action) // len(steers)], steers[int(action) % len(steers)]
    return (float(np.clip(acc / pedal_acceleration, 0, 1)), float(steer),
            float(np.clip(-acc / pedal_acceleration, 0, 1)))


class ActionTable:
    """The discrete actions of one checkpoint, as controls (dicts throttle / steer / brake) and back."""

    def __init__(self, accelerations, steers, pedal_acceleration: float = PEDAL_ACCELERATION,
                 max_steer_angle: float = MAX_STEER_ANGLE, wheelbase: float = WHEELBASE):
        self.accelerations, self.steers = [float(a) for a in accelerations], [float(s) for s in steers]
        self.pedal_acceleration, self.max_steer_angle, self.wheelbase = pedal_acceleration, max_steer_angle, wheelbase

    def __len__(self) -> int:
        return len(self.accelerations) * len(self.steers)

    def control(self, index: int) -> dict:
        throttle, steer, brake = discrete_to_control(index, self.accelerations, self.steers, self.pedal_acceleration)
        return {'throttle': throttle, 'steer': steer, 'brake': brake}

    def index(self, control: dict) -> int:
        """The discrete action nearest to a control (what the planner commanded, read back)."""
        acc = self.pedal_acceleration * (control['throttle'] - control['brake'])
        a = int(np.argmin([abs(acc - x) for x in self.accelerations]))
        s = int(np.argmin([abs(control['steer'] - x) for x in self.steers]))
        return a * len(self.steers) + s

    def kinematics(self, control: dict, speed: float, dt: float) -> tuple[float, float, float]:
        """What a control asks of the vehicle, in the units other stacks take, through the vehicle model the
        model was trained with: (acceleration m/s², in ±pedal_acceleration; target speed m/s ≥ 0, reached
        after `dt` s from `speed` — braking stops, never reverses; front-tire angle rad, + = LEFT as in ROS,
        Autoware and Ackermann messages, within ±max_steer_angle — CARLA's steer is + = right)."""
        acceleration = self.pedal_acceleration * (float(control['throttle']) - float(control['brake']))
        target_speed = max(0.0, float(speed) + acceleration * dt)
        tire_angle = -float(np.clip(control['steer'], -1.0, 1.0)) * self.max_steer_angle
        return acceleration, target_speed, tire_angle

    def control_of(self, acceleration: float, tire_angle: float) -> dict:
        """The inverse of `kinematics`: the CARLA control asking for this acceleration and tire angle."""
        pedal = float(np.clip(acceleration / self.pedal_acceleration, -1.0, 1.0))
        return {'throttle': max(pedal, 0.0), 'steer': float(np.clip(-tire_angle / self.max_steer_angle, -1, 1)),
                'brake': max(-pedal, 0.0)}

    def paths(self, ego, actions: np.ndarray, dt: float) -> np.ndarray:
        """(K, H+1, 2) map-frame paths of K candidate action sequences (K, H) from the ego's pose, by the
        kinematic bicycle the model was trained on — what the imagined plans would drive, for display."""
        k, h = actions.shape
        x, y, yaw, v = (np.full(k, ego.x), np.full(k, ego.y), np.full(k, ego.yaw), np.full(k, ego.speed))
        out = [np.stack([x, y], -1)]
        accs, steers = np.array(self.accelerations), np.array(self.steers)
        for t in range(h):
            acc, steer = accs[actions[:, t] // len(steers)], steers[actions[:, t] % len(steers)]
            beta = np.arctan(0.5 * np.tan(steer * self.max_steer_angle))
            x, y = x + v * np.cos(yaw - beta) * dt, y + v * np.sin(yaw - beta) * dt   # + steer turns right
            yaw = yaw - v * np.sin(beta) / (self.wheelbase / 2) * dt
            v = np.maximum(v + acc * dt, 0.0)
            out.append(np.stack([x, y], -1))
        return np.stack(out, 1)
