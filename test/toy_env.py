"""A deterministic toy task for world-model and planner tests, with the embedded envs' interface
(obs {'bev', 'ego'}, Discrete(15), the same info keys) but tiny observations.

The car sits on a line of 8 cells (drawn as one lit pixel in an 8x8 BEV). Action a moves it by
a // 5 - 1 cells (the acceleration index of CarDreamer's 15 actions; the steer part is ignored).
The goal is the left or the right end, given by the sign in the ego vector; reaching it pays +1 and ends
the episode, nothing else pays. The goal is 3-4 moves away, so only looking ahead finds it.
"""
import gymnasium as gym
import numpy as np
import pytest
import torch

from adawm_planner.core.bev import BevSpec
from adawm_planner.core.contract import Contract

CELLS = 8


class ToyLineEnv(gym.Env):
    def __init__(self, seed=None, max_steps=12):
        self.observation_space = gym.spaces.Dict({
            'bev': gym.spaces.Box(0, 255, (CELLS, CELLS, 1), np.uint8),
            'ego': gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)})
        self.action_space = gym.spaces.Discrete(15)
        self.max_steps = max_steps
        self.np_random = np.random.default_rng(seed)

    def contract(self):
        return Contract(step_period=0.1, accelerations=(-2.0, 0.0, 2.0), steers=(-0.6, -0.2, 0.0, 0.2, 0.6),
                        v_des=1.0, bev=BevSpec(size=CELLS), ego_features=('x', 'goal_side'))

    def _obs(self):
        bev = np.zeros((CELLS, CELLS, 1), np.uint8)
        bev[CELLS // 2, self.x, 0] = 255
        return {'bev': bev, 'ego': np.array([self.x / (CELLS - 1), self.goal_side], np.float32)}

    def reset(self, seed=None, options=None):
        if seed is not None:
            self.np_random = np.random.default_rng(seed)
        self.goal_side = float(self.np_random.choice([-1.0, 1.0]))
        self.x, self.t = int(self.np_random.integers(3, 5)), 0
        return self._obs(), {}

    def step(self, action):
        self.x = int(np.clip(self.x + int(action) // 5 - 1, 0, CELLS - 1))
        self.t += 1
        success = self.x == (0 if self.goal_side < 0 else CELLS - 1)
        timeout = not success and self.t >= self.max_steps
        info = {'success': success, 'collision': False, 'off_route': False, 'timeout': timeout,
                'ttc': 100.0, 'route_completion': float(success)}
        return self._obs(), float(success), success, timeout, info


def make_toy_env(task='toy', seed=None, continuous=False):
    return ToyLineEnv(seed)


@pytest.fixture(autouse=True, scope='module')
def single_thread():
    """Tiny models run faster on one thread, above all while other jobs share the 2 cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
