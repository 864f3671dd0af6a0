"""Does ε_P fall as model finetuning repairs the model? (the calibrated estimator must measure model error,
not novelty of the data)

    .venv/bin/python bench/bench_mismatch_repair.py [--pair dynamics] [--steps 4000] [--updates 100]

The frozen pretrained agent drives `--steps` steps of the pair's new task (actor mode, seeds 20000+; the
episodes alternate between a training half and a measuring half). Model-only LoRA finetuning
(`Finetuner(strategy='model')`, the FinetuneConfig defaults) trains on the training half; every
`--every` updates, ε_P, ε_π and the old TV are measured with the shipped reference on the measuring half's
256-step windows (stride 128) and printed as a table row.
"""
import argparse
import time

import numpy as np
import torch

from adawm_planner.core import mismatch
from adawm_planner.core.adaptation import FinetuneConfig, Finetuner
from adawm_planner.core.checkpoint import load_checkpoint
from adawm_planner.core.replay import Replay
from adawm_planner.experiments import mismatch_reference
from adawm_planner.share import package_share
from adawm_planner.sim import shift_pairs

SEED = 20_000
WINDOW, STRIDE = 256, 128


def replay_of(episodes, action_dim) -> Replay:
    steps = sum(len(e['is_first']) for e in episodes)
    replay = Replay(steps, episodes[0]['bev'].shape[1:], episodes[0]['ego'].shape[1], action_dim)
    for e in episodes:
        for t in range(len(e['is_first'])):
            replay.add({'bev': e['bev'][t], 'ego': e['ego'][t]}, e['action'][t], float(e['reward'][t]),
                       bool(e['is_first'][t]), bool(e['is_terminal'][t]))
    return replay


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--checkpoint', default=str(package_share() / 'checkpoints' / 'right_turn-moderate-small'))
    parser.add_argument('--pair', default='dynamics')
    parser.add_argument('--steps', type=int, default=4000)
    parser.add_argument('--updates', type=int, default=100)
    parser.add_argument('--every', type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.time()
    agent, _ = load_checkpoint(args.checkpoint)
    reference = mismatch.load_reference(args.checkpoint)
    task = shift_pairs()[args.pair]['finetune']
    episodes = mismatch_reference.collect(agent, task, 10_000, SEED, max_steps=args.steps)
    train, held = replay_of(episodes[0::2], agent.action_dim), replay_of(episodes[1::2], agent.action_dim)
    tuner = Finetuner(agent, FinetuneConfig(strategy='model'), reference=reference)

    def measure():
        rows = [tuner.measure(held.gather(np.arange(start, start + WINDOW)[None]))
                for start in range(0, len(held) - WINDOW + 1, STRIDE)]
        return [np.mean([r[k] for r in rows]) for k in ('eps_model', 'eps_policy', 'tv_prior_posterior')]

    print(f'{args.pair} ({task}): {len(train)} training steps, {len(held)} measured, {len(episodes)} episodes')
    print('| model updates | ε_P | ε_π | old ε_P (mean per-factor TV) |\n|---|---|---|---|')
    p = agent.preset
    for update in range(args.updates + 1):
        if update % args.every == 0:
            print('| {} | {:.2f} | {:.2f} | {:.2f} |'.format(update, *measure()), flush=True)
        if update < args.updates:
            tuner.update_model(train.sample(p.batch, p.seq_len))
    print(f'wall {time.time() - started:.0f} s')


if __name__ == '__main__':
    main()
