"""Does the world model see failures coming? Its reward and continue heads on a task's own drives.

Imagination learns the policy from what the reward head and the continue head predict; if they predict no
crash and no episode end, no policy step can learn to avoid them. For each task the agent drives
`--episodes` episodes (sampled actions, as the finetuning runs collect data; seeds 20000+); every episode is
filtered once and, at each step, the heads' predictions are compared with what happened:

  reward |err|        mean absolute error of the predicted reward over all steps
  crash: true / pred  mean true and predicted reward at collision steps (the penalty is -30 x speed), the
                      latter from the filtered state (it has seen the crash frame)
  crash: ahead        the same from the one-step prior (the crash frame not yet seen): what imagination sees
  cont @ fail         mean predicted continue probability at the last step of a failed episode (should be ~0)
  cont @ arrive       the same at the last step of a successful one (should be ~0)
  cont @ other        at every other step (should be ~1)
  BEV contact         share of crash steps / of all other steps whose raster shows another vehicle over the
                      ego's box (channels 'vehicles' and 'ego' both lit): is the crash in the observation?

    .venv/bin/python bench/bench_heads.py                       # the shipped checkpoint, every pair's tasks
    .venv/bin/python bench/bench_heads.py --run runs/experiments/lag_density/adawm/seed0   # after finetuning

`--run`: a finished finetuning run (its checkpoint with its adapters), on its own task unless --tasks.
"""
import argparse
import sys

import numpy as np
import torch

from adawm_planner.core.bev import CHANNELS
from adawm_planner.core.checkpoint import load_checkpoint
from adawm_planner.core.networks import TwoHot
from adawm_planner.share import package_share
from adawm_planner.sim import default_task, make_env, shift_pairs

SEED = 20_000
OUTCOMES = ('success', 'collision', 'off_route', 'timeout')
VEHICLES, EGO = CHANNELS.index('vehicles'), CHANNELS.index('ego')


def bev_contact(bev: np.ndarray) -> np.ndarray:
    """Per frame (T, H, W, C): whether any pixel has both another vehicle and the ego drawn on it."""
    return ((bev[..., VEHICLES] > 0) & (bev[..., EGO] > 0)).any(axis=(-2, -1))


def drive(agent, task, episodes, first_seed=SEED):
    """Episodes of `task` in the replay's time convention (step t: o_t, a_{t-1}, r_t, is_terminal_t)."""
    env = make_env(task, seed=first_seed)
    out = []
    for e in range(episodes):
        obs, _ = env.reset(seed=first_seed + e)
        agent.generator.manual_seed(first_seed + e)
        state, done = None, False
        steps = {'bev': [obs['bev']], 'ego': [obs['ego']], 'action': [np.zeros(agent.action_dim, np.float32)],
                 'reward': [0.0]}
        while not done:
            action, state, _ = agent.act(obs, state, 'sample')
            obs, reward, terminated, truncated, info = env.step(action)
            for key, value in (('bev', obs['bev']), ('ego', obs['ego']), ('action', state['action'].numpy()),
                               ('reward', reward)):
                steps[key].append(value)
            done = terminated or truncated
        episode = {k: np.asarray(np.stack(v) if k in ('bev', 'ego', 'action') else v) for k, v in steps.items()}
        episode['outcome'] = next(name for name in OUTCOMES if info[name])
        out.append(episode)
    env.close()
    return out


@torch.no_grad()
def heads_report(agent, episodes) -> dict:
    wm = agent.world_model
    errors, crash_true, crash_pred, cont_fail, cont_arrive, cont_other = [], [], [], [], [], []
    contact_crash, contact_other, crash_ahead = [], [], []
    for e in episodes:
        length = len(e['reward'])
        first = torch.zeros(1, length, dtype=torch.bool)
        first[0, 0] = True
        # the filter's latent draws from a generator of its own: the same episodes give the same report
        posts, priors = wm.observe(torch.from_numpy(e['bev'])[None], torch.from_numpy(e['ego'])[None],
                                   torch.from_numpy(e['action'].astype(np.float32))[None], first,
                                   generator=torch.Generator().manual_seed(SEED))
        feat = wm.feat(posts)[0, 1:]          # step 0 has no reward to predict
        reward = TwoHot(wm.reward_head(feat), wm.bins).mean().numpy()
        cont = torch.sigmoid(wm.cont_head(feat)[:, 0]).numpy()
        true = e['reward'][1:]
        contact = bev_contact(e['bev'][1:])
        errors.extend(np.abs(reward - true))
        if e['outcome'] == 'collision':   # a collision ends the episode: its last step is the crash
            crash_true.append(true[-1])
            crash_pred.append(reward[-1])
            crash_ahead.append(TwoHot(wm.reward_head(wm.feat(priors)[0, -1]), wm.bins).mean().item())
            contact_crash.append(contact[-1])
            contact = contact[:-1]
        contact_other.extend(contact)
        ended = e['outcome'] != 'timeout'     # a timeout is not terminal: the episode is cut, not ended
        (cont_arrive if e['outcome'] == 'success' else cont_fail).extend(cont[-1:] if ended else [])
        cont_other.extend(cont[:-1] if ended else cont)
    mean = lambda values: float(np.mean(values)) if len(values) else float('nan')
    return {'steps': len(errors), 'reward_err': mean(errors), 'crashes': len(crash_true),
            'crash_true': mean(crash_true), 'crash_pred': mean(crash_pred), 'crash_ahead': mean(crash_ahead),
            'failed': len(cont_fail),
            'cont_fail': mean(cont_fail), 'cont_arrive': mean(cont_arrive), 'cont_other': mean(cont_other),
            'contact_crash': mean(contact_crash), 'contact_other': mean(contact_other)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--checkpoint', default=str(package_share() / 'checkpoints' / 'right_turn-moderate-small'))
    parser.add_argument('--run', default=None, help='a finished finetuning run: its agent with its adapters')
    parser.add_argument('--tasks', nargs='+', default=None)
    parser.add_argument('--episodes', type=int, default=20)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.run:
        from adawm_planner.experiments.final_eval import agent_after
        agent, result = agent_after(args.run)
        tasks = args.tasks or [result['task']]
        label = f"{args.run} ({result['strategy']})"
    else:
        agent, _ = load_checkpoint(args.checkpoint)
        tasks = args.tasks or list(dict.fromkeys([default_task()] + [p['finetune'] for p in shift_pairs().values()]))
        label = args.checkpoint
    print(f'bench_heads: {label}, {args.episodes} episodes per task (sampled actions, seeds {SEED}+)')
    print(f'{"task":46s} {"steps":>6s} {"outcomes s/c/o/t":>17s} {"reward |err|":>12s} {"crash: true / pred":>19s} '
          f'{"crash: ahead":>12s} {"cont @ fail":>11s} {"cont @ arrive":>13s} {"cont @ other":>12s} {"BEV contact: crash / other":>26s}')
    for task in tasks:
        episodes = drive(agent, task, args.episodes)
        r = heads_report(agent, episodes)
        counts = '/'.join(str(sum(e['outcome'] == o for e in episodes)) for o in OUTCOMES)
        print(f'{task:46s} {r["steps"]:6d} {counts:>17s} {r["reward_err"]:12.2f} '
              f'{r["crash_true"]:9.1f} / {r["crash_pred"]:6.1f} {r["crash_ahead"]:12.1f} {r["cont_fail"]:11.3f} {r["cont_arrive"]:13.3f} '
              f'{r["cont_other"]:12.3f} {r["contact_crash"]:15.2f} / {r["contact_other"]:.4f}', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
