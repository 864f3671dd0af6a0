"""`adawm sim ...`: look at the embedded driving tasks and check the domain shifts are real.

    adawm sim list                               tasks, gymnasium ids and shift pairs
    adawm sim render TASK --out f.png|f.gif      BEV beside highway-env's own view
    adawm sim shift-check [--episodes N]         scripted-policy success / collision per shift pair
"""
from __future__ import annotations

import numpy as np

from adawm_planner.experiments.cli_args import Refused, check_pair, check_task, refuse


def register(subparsers) -> None:
    sim = subparsers.add_parser('sim', help='embedded driving tasks: list, render, shift-check')
    commands = sim.add_subparsers(dest='sim_command', metavar='SIM_COMMAND', required=True)

    listing = commands.add_parser('list', help='tasks, gymnasium ids, shift pairs')
    listing.set_defaults(func=_list)

    render = commands.add_parser('render', help='draw a task: BEV beside the simulator\'s own view')
    render.add_argument('task', help='task name, e.g. right_turn-moderate (see `adawm sim list`), or `all`: '
                                     'one montage of every task with moderate traffic (PNG only)')
    render.add_argument('--out', required=True, help='.png (one frame) or .gif (an episode of the scripted policy)')
    render.add_argument('--seed', type=int, default=0)
    render.add_argument('--steps', type=int, default=40, help='png: steps driven before the frame; gif: frames')
    render.set_defaults(func=_render)

    check = commands.add_parser('shift-check', help='scripted-policy success / collision rates per shift pair')
    check.add_argument('--episodes', type=int, default=50)
    check.add_argument('--pairs', nargs='*', default=None, help='pair names (default: all)')
    check.add_argument('--tasks', nargs='*', default=[], help='more tasks to measure, outside any pair')
    check.set_defaults(func=_shift_check)


def _list(args) -> int:
    from adawm_planner.sim import default_task, gym_id, shift_pairs, task_names
    for task in task_names():
        print(f'{task:40s} {gym_id(task)}{"   (default pretrain task)" if task == default_task() else ""}')
    for name, pair in shift_pairs().items():
        print(f'pair {name:10s} {pair["pretrain"]} -> {pair["finetune"]}  ({pair["shift"]})')
    return 0


def _render(args) -> int:
    """PNG: the frame after --steps steps of the scripted driver; GIF: the episode (≤ --steps steps)."""
    from PIL import Image

    from adawm_planner.sim import tasks_config
    if args.task != 'all':
        try:
            check_task(args.task)
        except Refused as exc:
            return refuse('sim render', str(exc))
    if args.task == 'all':
        tasks = [f'{base}-moderate' for base in tasks_config()['tasks']]
        tiles = [_label(_frames(task, args.seed, args.steps)[-1], task) for task in tasks]
        tiles += [np.zeros_like(tiles[0])] * (len(tiles) % 2)
        rows = [np.concatenate(tiles[i:i + 2], axis=1) for i in range(0, len(tiles), 2)]
        Image.fromarray(np.concatenate(rows, axis=0)).save(args.out, optimize=True)
        print(f'{args.out}: {", ".join(tasks)} after {args.steps} steps (seed {args.seed})')
        return 0
    frames = _frames(args.task, args.seed, args.steps)
    if args.out.endswith('.gif'):
        images = [Image.fromarray(f).resize((f.shape[1] // 2, f.shape[0] // 2)) for f in frames[::2]]
        images[0].save(args.out, save_all=True, append_images=images[1:], duration=200, loop=0, optimize=True)
    else:
        Image.fromarray(frames[-1]).save(args.out, optimize=True)
    print(f'{args.out}: {args.task}, seed {args.seed}, {len(frames) - 1} steps')
    return 0


def _frames(task, seed, steps) -> list[np.ndarray]:
    """Rendered frames of the scripted driver on `task`, from reset until `steps` steps or the episode ends."""
    from adawm_planner.sim import make_env
    from adawm_planner.sim.scripted import scripted_control
    env = make_env(task, seed=seed, render_mode='rgb_array')
    env.reset(seed=seed)
    frames = [env.render()]
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step_control(*scripted_control(env.scene(), env.tracker, env.task['v_des']))
        frames.append(env.render())
        if terminated or truncated:
            break
    env.close()
    return frames


def _label(frame, text) -> np.ndarray:
    import cv2
    tile = cv2.resize(frame, (frame.shape[1] // 2, frame.shape[0] // 2), interpolation=cv2.INTER_AREA)
    cv2.putText(tile, text, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 0), 1, cv2.LINE_AA)
    return np.pad(tile, ((2, 2), (2, 2), (0, 0)), constant_values=255)


def _shift_check(args) -> int:
    from adawm_planner.sim import make_env, shift_pairs
    from adawm_planner.sim.scripted import run_episode
    pairs = shift_pairs()
    names = args.pairs or list(pairs)
    try:
        [check_pair(name) for name in names] + [check_task(task) for task in args.tasks]
    except Refused as exc:
        return refuse('sim shift-check', str(exc))
    measured = {}
    for task in dict.fromkeys([t for n in names for t in (pairs[n]['pretrain'], pairs[n]['finetune'])] + args.tasks):
        env = make_env(task)
        infos = [run_episode(env, seed) for seed in range(args.episodes)]
        measured[task] = {k: float(np.mean([i[k] for i in infos])) for k in ('success', 'collision', 'timeout')}
        env.close()
    print(f'scripted driver, {args.episodes} episodes per task (seeds 0..{args.episodes - 1})')
    print('| task | success | collision | timeout |')
    print('|---|---|---|---|')
    for task, m in measured.items():
        print(f'| {task} | {m["success"]:.2f} | {m["collision"]:.2f} | {m["timeout"]:.2f} |')
    print()
    print('| pair | pretrain -> finetune | success | collision | timeout |')
    print('|---|---|---|---|---|')
    for name in names:
        a, b = measured[pairs[name]['pretrain']], measured[pairs[name]['finetune']]
        print(f'| {name} | {pairs[name]["pretrain"]} -> {pairs[name]["finetune"]} | '
              + ' | '.join(f'{a[k]:.2f} -> {b[k]:.2f}' for k in ('success', 'collision', 'timeout')) + ' |')
    return 0
