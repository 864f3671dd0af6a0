"""Can training teach the heads failures? The world model trained further on drives rich in crashes, with the
reward and continue losses at episode ends weighted (preset `terminal_weight`), heads read on held-out drives.

From a checkpoint: the agent drives `--episodes` episodes of each `--tasks` (sampled actions, seeds 30000+)
into a replay; for each weight W in `--weights`, a fresh copy of the world model trains `--updates` updates
(the preset's batch and sequence length, its model optimiser) on it, and every `--every` updates its heads
are read on `--heldout` held-out episodes of the first task (seeds 40000+) as bench_heads.py reads them:
predicted reward at crashes (filtered and one step ahead), continue at failed ends, at arrivals and at every other step.

    .venv/bin/python bench/bench_heads_repair.py --weights 1 30 --updates 300      # ~25 min on one core
"""
import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_heads  # noqa: E402

from adawm_planner.core.checkpoint import load_checkpoint  # noqa: E402
from adawm_planner.core.replay import Replay  # noqa: E402
from adawm_planner.share import package_share  # noqa: E402

TRAIN_SEED, HELDOUT_SEED = 30_000, 40_000
COLUMNS = ('crash_true', 'crash_pred', 'crash_ahead', 'cont_fail', 'cont_arrive', 'cont_other')


def replay_of(episodes, agent) -> Replay:
    steps = sum(len(e['reward']) for e in episodes)
    replay = Replay(steps, episodes[0]['bev'].shape[1:], agent.world_model.ego_dim, agent.action_dim, seed=0)
    for e in episodes:
        last = len(e['reward']) - 1
        ended = e['outcome'] != 'timeout'     # a timeout is cut, not ended
        for t in range(last + 1):
            replay.add({'bev': e['bev'][t], 'ego': e['ego'][t]}, e['action'][t], e['reward'][t], t == 0,
                       ended and t == last)
    return replay


def train(agent, replay, weight, updates, every, heldout):
    """Yields (updates done, heads report on `heldout`) every `every` updates."""
    wm = agent.world_model
    wm.preset = wm.preset.replace(terminal_weight=weight)
    optimizer = torch.optim.Adam(wm.parameters(), wm.preset.model_lr, eps=1e-8)
    torch.manual_seed(0)
    for update in range(1, updates + 1):
        loss, _ = wm.loss(replay.sample(wm.preset.batch, wm.preset.seq_len))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(wm.parameters(), wm.preset.grad_clip)
        optimizer.step()
        if update % every == 0:
            yield update, bench_heads.heads_report(agent, heldout)


def row(label, report) -> str:
    return f'{label:>16s} ' + ' '.join(f'{report[k]:11.3f}' for k in COLUMNS)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--checkpoint', default=str(package_share() / 'checkpoints' / 'right_turn-moderate-small'))
    parser.add_argument('--tasks', nargs='+', default=['right_turn-jammed', 'right_turn-moderate'])
    parser.add_argument('--episodes', type=int, default=40, help='training episodes per task')
    parser.add_argument('--heldout', type=int, default=20, help='held-out episodes of the first task')
    parser.add_argument('--weights', type=float, nargs='+', default=[1.0, 30.0])
    parser.add_argument('--updates', type=int, default=300)
    parser.add_argument('--every', type=int, default=100)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    agent, _ = load_checkpoint(args.checkpoint)
    episodes = [e for task in args.tasks for e in bench_heads.drive(agent, task, args.episodes, TRAIN_SEED)]
    heldout = bench_heads.drive(agent, args.tasks[0], args.heldout, HELDOUT_SEED)
    count = lambda eps, outcome: sum(e['outcome'] == outcome for e in eps)
    print(f'bench_heads_repair: {args.checkpoint}; {len(episodes)} training episodes '
          f'({sum(len(e["reward"]) for e in episodes)} steps, {count(episodes, "collision")} crashes) of '
          f'{", ".join(args.tasks)}; {len(heldout)} held-out of {args.tasks[0]} ({count(heldout, "collision")} crashes)')
    print(f'{"":>16s} ' + ' '.join(f'{c:>11s}' for c in COLUMNS))
    print(row('before', bench_heads.heads_report(agent, heldout)), flush=True)
    replay = replay_of(episodes, agent)
    for weight in args.weights:
        trained = copy.deepcopy(agent)
        for update, report in train(trained, replay, weight, args.updates, args.every, heldout):
            print(row(f'W {weight:g}, {update} upd', report), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
