"""Embedded driving tasks (gymnasium over highway-env) and their Scene source; free of ROS.

    from adawm_planner.sim import make_env, task_names, shift_pairs
    env = make_env('right_turn-moderate', seed=0)            # or gymnasium.make('AdaWM/RightTurn-moderate-v0')
"""
from __future__ import annotations

from functools import lru_cache

import gymnasium as gym
import yaml

from adawm_planner.share import package_share

TASKS_FILE = package_share() / 'config' / 'tasks.yaml'


@lru_cache(maxsize=1)
def tasks_config() -> dict:
    return yaml.safe_load(TASKS_FILE.read_text())


def task_names() -> list[str]:
    """Every task: BASE-TRAFFIC for each traffic preset, and BASE-TRAFFIC-aggressive etc. for other drivers."""
    config, names = tasks_config(), []
    for base, entry in config['tasks'].items():
        while 'traffic' not in entry:
            entry = config['tasks'][entry['base']]
        for traffic in entry['traffic']:
            names += [f'{base}-{traffic}'] + [f'{base}-{traffic}-{d}' for d in config['drivers'] if d != 'normal']
    return names


def task_problem(task: str) -> str | None:
    """Why `task` names no task (a named one, with any '@FIELD=VALUE,...' overrides: sim/envs.py resolve), or
    None."""
    from adawm_planner.sim.envs import resolve
    named = task.partition('@')[0]
    if named not in task_names():
        return f'unknown task {named!r}; known: {", ".join(task_names())}'
    try:
        resolve(tasks_config(), task)
    except (KeyError, ValueError) as exc:
        return f'task {task!r}: {exc.args[0]}'
    return None


def shift_pairs() -> dict[str, dict]:
    """name -> {'pretrain': task, 'finetune': task, 'shift': what changes}."""
    return dict(tasks_config()['shift_pairs'])


def default_task() -> str:
    return tasks_config()['default_pretrain_task']


def default_pair() -> str:
    return tasks_config()['default_pair']


def gym_id(task: str) -> str:
    base, *rest = task.split('-')
    return 'AdaWM/' + ''.join(word.capitalize() for word in base.split('_')) + ''.join('-' + r for r in rest) + '-v0'


def make_env(task: str, seed: int | None = None, continuous: bool = False, **overrides) -> gym.Env:
    """The env of `task` (see task_names()). Overrides: dt (s per step, default tasks.yaml's), bev_size,
    render_mode, and any task field (e.g. v_des=5.0, time_limit=20.0)."""
    from adawm_planner.sim.envs import DrivingEnv, resolve
    config = tasks_config()
    spec = resolve(config, task)
    dt = overrides.pop('dt', config['dt'])
    bev_size = overrides.pop('bev_size', 64)
    render_mode = overrides.pop('render_mode', None)
    spec.update(overrides)
    return DrivingEnv(task, spec, config['accelerations'], config['steers'][spec['steers']], seed=seed,
                      continuous=continuous, dt=dt, bev_size=bev_size, render_mode=render_mode)


for _task in task_names():
    if gym_id(_task) not in gym.registry:
        gym.register(gym_id(_task), entry_point=make_env, kwargs={'task': _task})
