"""Cost of AdaWM's adaptation step with the `small` preset: one finetuning step (model update, policy
update), one mismatch measurement (and the improvement view of ε_π it adds when chosen), and the size of
exported adapters.

    .venv/bin/python bench/bench_adaptation.py [--preset small] [--repeats 20] [--threads 1]

Uses replayed data of the embedded tasks' shapes (BEV 64×64×5 uint8, ego vector) filled with random
content: the cost of these steps does not depend on what the pixels show. The replay keeps the frozen
encoder's embeddings (Finetuner.attach), filled once before timing: a finetuning run embeds each new frame
once, so its steady state; the first batch, embedded whole, is timed apart.
"""
import argparse
import resource
import statistics
import time

import numpy as np
import torch

from adawm_planner.core import mismatch
from adawm_planner.core.adaptation import FinetuneConfig, Finetuner
from adawm_planner.core.agent import Agent
from adawm_planner.core.presets import load_preset
from adawm_planner.core.replay import Replay


def timed(fn, repeats):
    fn()  # warm-up
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), max(samples)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--preset', default='small')
    parser.add_argument('--repeats', type=int, default=20)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--ego-dim', type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    preset = load_preset(args.preset)
    agent = Agent(preset, (64, 64, 5), args.ego_dim, 15, seed=0)
    rng = np.random.default_rng(0)
    replay = Replay(4096, (64, 64, 5), args.ego_dim, 15)
    for i in range(4096):
        obs = {'bev': rng.integers(0, 256, (64, 64, 5), dtype=np.uint8),
               'ego': rng.normal(size=args.ego_dim).astype(np.float32)}
        replay.add(obs, np.eye(15)[rng.integers(15)], float(rng.normal()), i % 200 == 0, False)
    config = FinetuneConfig(strategy='adawm')
    tuner = Finetuner(agent, config)
    tuner.attach(replay)   # as every finetuning loop does: the frozen encoder's embeddings are kept
    cold_start = time.perf_counter()   # the first batch: every frame embedded now
    tuner.update_policy(replay.sample(preset.batch, preset.seq_len))
    cold = time.perf_counter() - cold_start
    for start in range(0, 4096, 512):   # a buffer whose every frame has been embedded once
        replay.gather(np.arange(start, start + 512)[None])
    batch = lambda: replay.sample(preset.batch, preset.seq_len)
    window = replay.sample(1, config.window)

    print(f'preset {args.preset}, batch {preset.batch}×{preset.seq_len}, window {config.window}, '
          f'LoRA rank {config.rank}, torch threads {args.threads}')
    for side, report in tuner.trainable_report().items():
        print(f'  {side}: {report["trainable"]} trainable parameters = {100 * report["fraction"]:.2f}% of base')
    print(f'  policy update, first batch (its frames embedded then): {1000 * cold:.1f} ms')
    posts, _ = agent.world_model.observe(window['bev'], window['ego'], window['action'], window['is_first'])
    states = {k: posts[k].flatten(0, 1)[::mismatch.IMPROVEMENT_STRIDE] for k in ('deter', 'stoch')}
    improvement = lambda: mismatch.improvement_scores(agent.world_model, agent.actor_critic, states, preset.horizon,
                                                      preset.gamma)
    for name, fn in (('mismatch measurement (ε_P, ε_π)', lambda: tuner.measure(window)),
                     (f'ε_π improvement view ({len(states["deter"])} states; added with --policy-signal '
                      'improvement)', improvement),
                     ('model update (LoRA)', lambda: tuner.update_model(batch())),
                     ('policy update (LoRA)', lambda: tuner.update_policy(batch()))):
        median, worst = timed(fn, args.repeats)
        print(f'  {name}: median {1000 * median:.1f} ms, max {1000 * worst:.1f} ms')
    for target in ('model', 'policy'):
        adapter = tuner.export_adapter(target, version=1)
        print(f'  {target} adapter export: {len(adapter.blob) / 1024:.1f} KiB ({adapter.parameter_count} parameters)')
    print(f'  peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB')


if __name__ == '__main__':
    main()
