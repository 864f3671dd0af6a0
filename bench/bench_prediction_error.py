"""Is the world model wrong on a task? The frozen model's k-step open-loop prediction error, per task.

A known-answer pair's verification (issue #14): on a model-side shift the pretrained model's prediction of
the ego should get clearly worse while the scene is otherwise the same; on a policy-side shift it should
stay at its pretraining level. The frozen agent drives each task (actor mode, seeds 20000+, about `--steps`
steps); at every step t with k steps of the same episode before it, the RSSM is rolled k steps open-loop
from the posterior at t − k with the actions actually taken (core/mismatch.py open_loop_priors, the
rollout ε_P scores), and compared with what the filter saw at t:

  KL    Σ over latent factors of KL(q(z_t | h_t, o_t) ‖ p_k(z_t))   (nats; ε_P's per-step score)
  ego   Σ over the ego features of (symlog ego_t − ego decoded from the k-step prediction)²
  route the same on the route heading error and lateral offset alone (where a vehicle change shows first)

    .venv/bin/python bench/bench_prediction_error.py --tasks right_turn-moderate right_turn_mild_lag-moderate
"""
import argparse

import numpy as np
import torch

from adawm_planner.core import mismatch
from adawm_planner.core.checkpoint import load_checkpoint
from adawm_planner.core.metrics import EGO_FEATURES
from adawm_planner.core.networks import symlog
from adawm_planner.experiments.mismatch_reference import REFERENCE_SEED, collect
from adawm_planner.share import package_share

ROUTE = [EGO_FEATURES.index(name) for name in ('route_heading_error', 'lateral_offset')]


@torch.no_grad()
def errors(agent, episode: dict, horizon: int, seed: int) -> dict:
    """Per-step KL and ego errors of one episode, where defined (t ≥ horizon)."""
    wm = agent.world_model
    batch = {k: torch.as_tensor(v)[None] for k, v in episode.items() if k != 'failed'}
    generator = torch.Generator().manual_seed(seed)
    posts, _ = wm.observe(batch['bev'], batch['ego'], batch['action'], batch['is_first'], generator=generator)
    b, t, state = mismatch.open_loop_priors(wm, posts, batch['action'], batch['is_first'], horizon, generator)
    if len(t) == 0:
        return {'kl': np.zeros(0), 'ego': np.zeros(0), 'route': np.zeros(0)}
    kl = mismatch.categorical_kl(posts['logits'][b, t], state['logits'])
    squared = (wm.ego_decoder(wm.feat(state)) - symlog(batch['ego'][0, t])) ** 2
    return {'kl': kl.numpy(), 'ego': squared.sum(-1).numpy(), 'route': squared[:, ROUTE].sum(-1).numpy()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--checkpoint', default=str(package_share() / 'checkpoints' / 'right_turn-moderate-small'))
    parser.add_argument('--tasks', nargs='+', required=True)
    parser.add_argument('--steps', type=int, default=4000, help='about this many steps per task (whole episodes)')
    parser.add_argument('--horizon', type=int, default=15)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    agent, _ = load_checkpoint(args.checkpoint)
    print(f'bench_prediction_error: {args.checkpoint}, k = {args.horizon}, actor mode, seeds {REFERENCE_SEED}+')
    print('| task | steps | episodes | success | KL (nats) | ego error | route error |\n|---|---|---|---|---|---|---|')
    for task in args.tasks:
        episodes = collect(agent, task, 10_000, REFERENCE_SEED, max_steps=args.steps)
        parts = [errors(agent, e, args.horizon, REFERENCE_SEED + i) for i, e in enumerate(episodes)]
        joined = {k: np.concatenate([p[k] for p in parts]) for k in ('kl', 'ego', 'route')}
        success = np.mean([not e['failed'] for e in episodes])
        print(f'| {task} | {len(joined["kl"])} | {len(episodes)} | {success:.2f} | {joined["kl"].mean():.1f} | '
              f'{joined["ego"].mean():.2f} | {joined["route"].mean():.2f} |', flush=True)


if __name__ == '__main__':
    main()
