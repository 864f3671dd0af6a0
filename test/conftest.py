"""Test-wide guards: DDS stays on loopback in a domain of this run's own, whatever the caller set; torch
runs one thread per process (measured: with 2 threads on 2 cores, a tiny-model update took 5 s instead of
14 ms as soon as another process kept one core busy — OpenMP threads spin-waiting on each other)."""
import os
import random

# Set before anything imports rclpy: Fast DDS reads these when the first context starts.
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ.setdefault('ROS_DOMAIN_ID', str(random.randint(1, 100)))
os.environ.setdefault('OMP_NUM_THREADS', '1')


import pytest  # noqa: E402  (after the environment is set)


@pytest.fixture(scope='session')
def tiny_checkpoint(tmp_path_factory):
    """An untrained `tiny` agent for the default task, with a replay summary of 100 scripted steps:
    for the tests of plumbing (nodes, launch, bags), where what matters is that it loads and runs."""
    import numpy as np
    import torch

    from adawm_planner.core.agent import Agent
    from adawm_planner.core.checkpoint import save_checkpoint
    from adawm_planner.core.presets import load_preset
    from adawm_planner.core.replay import Replay
    from adawm_planner.sim import default_task, make_env

    torch.manual_seed(0)
    task = default_task()
    env = make_env(task, seed=0)
    agent = Agent.for_env(load_preset('tiny'), env)
    replay = Replay(200, env.observation_space['bev'].shape, agent.world_model.ego_dim, agent.action_dim)
    obs, _ = env.reset(seed=0)
    replay.add(obs, np.zeros(agent.action_dim), 0.0, True, False)
    for step in range(100):
        obs, reward, terminated, truncated, _ = env.step(step % 15)
        replay.add(obs, agent.encode_action(step % 15).numpy(), reward, False, terminated)
        if terminated or truncated:
            obs, _ = env.reset()
            replay.add(obs, np.zeros(agent.action_dim), 0.0, True, False)
    return save_checkpoint(tmp_path_factory.mktemp('ckpt') / 'tiny', agent, task, 0, {}, replay)
