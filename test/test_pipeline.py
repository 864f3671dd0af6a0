"""core's StepPipeline: one gating rule and one episode tracker for every consumer of frames."""
import dataclasses

import numpy as np
import pytest

from adawm_planner.core.pipeline import StepPipeline
from adawm_planner.sim import default_task, make_env


@pytest.fixture(scope='module')
def task():
    env = make_env(default_task(), seed=4, dt=0.05)   # the bridge's tick: two frames per model step
    env.reset(seed=4)
    return env.unwrapped


def tenth(sim):
    """The task's contract at a 0.1 s model step: two 0.05 s bridge frames per step."""
    return dataclasses.replace(sim.contract(), step_period=0.1)


def frames(sim, count, control=(0.5, 0.0, 0.0)):
    for _ in range(count):
        sim.step_control(*control)
        yield sim.scene()


def test_steps_on_a_grid_anchored_at_the_episodes_first_frame(task):
    pipeline = StepPipeline(tenth(task))
    stamps = [round(0.05 * i + 0.35, 3) for i in range(12)]   # the episode's first frame is at 0.35 s
    scenes = list(frames(task, 12))
    steps = [pipeline.step(t, s) for t, s in zip(stamps, scenes)]
    taken = [s.stamp for s in steps if s is not None]
    assert taken == stamps[::2]
    assert steps[0].is_first and steps[0].reward == 0.0 and steps[0].control == (0.0, 0.0, 0.0)
    assert not any(s.is_first for s in steps[1:] if s is not None)


def test_the_step_period_comes_from_the_contract(task):
    slow = dataclasses.replace(tenth(task), step_period=0.2)
    pipeline = StepPipeline(slow)
    steps = [pipeline.step(0.05 * i, s) for i, s in enumerate(frames(task, 12))]
    assert [i for i, s in enumerate(steps) if s is not None] == [0, 4, 8]


def test_new_route_time_backwards_and_restart_start_episodes(task):
    pipeline = StepPipeline(tenth(task))
    scene = next(frames(task, 1))
    first = pipeline.step(1.0, scene, (0.5, 0.1, 0.0))
    assert first.is_first and first.episode == 0
    assert not pipeline.step(1.1, scene, (0.5, 0.1, 0.0)).is_first
    rerouted = dataclasses.replace(scene, route=scene.route.copy())   # a new route message
    assert pipeline.step(1.2, rerouted).is_first
    assert pipeline.step(0.5, rerouted).is_first                     # the simulator was reset
    pipeline.restart()
    step = pipeline.step(0.6, rerouted)
    assert step.is_first and step.episode == 3


def test_a_collision_between_steps_counts_at_the_next_step(task):
    pipeline = StepPipeline(tenth(task))
    scene = next(frames(task, 1))
    pipeline.step(0.0, scene)
    assert pipeline.step(0.05, dataclasses.replace(scene, collision=True)) is None
    step = pipeline.step(0.1, scene)
    assert step.scene.collision and step.reward_terms['r_collision'] <= 0.0
    assert not pipeline.step(0.2, scene).scene.collision


def test_the_reward_uses_the_contracts_desired_speed(task):
    scenes = list(frames(task, 3))
    rewards = {}
    for v_des in (4.0, 8.0):
        pipeline = StepPipeline(dataclasses.replace(tenth(task), v_des=v_des))
        pipeline.step(0.0, scenes[0])
        rewards[v_des] = pipeline.step(0.1, scenes[1]).reward_terms['r_speed']
    assert rewards[4.0] != rewards[8.0]


def test_the_env_steps_through_the_same_pipeline():
    """The env's observations are the pipeline's: the same scene gives the same raster and ego vector."""
    env = make_env(default_task(), seed=7)
    obs, _ = env.reset(seed=7)
    sim = env.unwrapped
    pipeline = StepPipeline(sim.contract())
    again = pipeline.step(0.0, sim.scene()).obs
    assert np.array_equal(obs['bev'], again['bev']) and np.allclose(obs['ego'], again['ego'])
