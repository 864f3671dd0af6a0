"""The learning core of two checkouts side by side (e.g. before and after a speed change), `small` preset,
one torch thread: world-model step, full update, LoRA finetuning (model update, policy update, mismatch
measurement) and one K×H planning decision, on the same synthetic batch.

    git worktree add /tmp/adawm-before 1fe806d   # the code before issue #13's speed work (or: git archive)
    .venv/bin/python bench/bench_before_after.py --before /tmp/adawm-before [--rounds 3] [--repeats 3]

Each measurement runs in a child process whose `adawm_planner` is imported from that checkout, so each side
runs as it ships (process-wide settings such as the allocator included); children alternate before, after,
before, ... for `--rounds`. Times are this thread's CPU time (robust when other jobs share the cores) and
wall time, medians over `--repeats` calls, and the table shows the median over rounds.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
MEASURES = ('world-model step', 'full update', 'LoRA model update', 'LoRA policy update',
            'mismatch measurement', 'planning decision K=64 H=15')


def child(repeats):
    """Measure with the adawm_planner on sys.path; print one JSON line {measure: [cpu_ms, wall_ms]}."""
    import numpy as np
    import torch
    from adawm_planner.core.adaptation import FinetuneConfig, Finetuner
    from adawm_planner.core.agent import Agent
    from adawm_planner.core.planner import plan
    from adawm_planner.core.presets import load_preset
    try:
        from adawm_planner.core.learner import Learner
    except ImportError:  # before the split of core/train.py
        from adawm_planner.core.train import Learner

    torch.set_num_threads(1)
    torch.manual_seed(0)
    p = load_preset('small')
    rng = np.random.default_rng(0)
    is_first = torch.zeros(p.batch, p.seq_len, dtype=torch.bool)
    is_first[:, 0] = True
    data = {'bev': torch.from_numpy(rng.integers(0, 2, (p.batch, p.seq_len, 64, 64, 5), dtype=np.uint8) * 255),
            'ego': torch.from_numpy(rng.normal(size=(p.batch, p.seq_len, 9)).astype(np.float32)),
            'action': torch.eye(15)[torch.from_numpy(rng.integers(0, 15, (p.batch, p.seq_len)))],
            'reward': torch.from_numpy(rng.normal(size=(p.batch, p.seq_len)).astype(np.float32)),
            'is_first': is_first, 'is_terminal': torch.zeros(p.batch, p.seq_len, dtype=torch.bool)}
    window = {k: v[:1].repeat(1, 2, *[1] * (v.dim() - 2)) for k, v in data.items()}  # 1 × 64 steps
    agent = Agent(p, (64, 64, 5), 9, 15)
    learner = Learner(agent)
    tuner = Finetuner(Agent(p, (64, 64, 5), 9, 15), FinetuneConfig(strategy='adawm'))
    wm, ac = agent.world_model, agent.actor_critic
    latent = wm.obs_step(None, torch.zeros(15), {'bev': data['bev'][0, 0], 'ego': data['ego'][0, 0]}, True)

    def world_model_step():
        loss, _, _ = wm.loss_and_posts(data)
        learner._step(learner.model_opt, loss, wm.parameters())

    finetune_data, finetune_window = data, window
    if hasattr(tuner, 'attach'):
        # A checkout whose replay keeps a frozen encoder's embeddings (Finetuner.attach): batches arrive with
        # them, and each step pays for embedding the frames that are new since the last (train_every = 8).
        with torch.no_grad():
            twm = tuner.agent.world_model
            finetune_data = {**data, 'embed': twm.embed(data['bev'], data['ego'])}
            finetune_window = {**window, 'embed': twm.embed(window['bev'], window['ego'])}
            new_frames = lambda: twm.embed(data['bev'][0, :8], data['ego'][0, :8])
    else:
        new_frames = lambda: None

    fns = dict(zip(MEASURES, (
        world_model_step, lambda: learner.update(data), lambda: (new_frames(), tuner.update_model(finetune_data)),
        lambda: (new_frames(), tuner.update_policy(finetune_data)), lambda: tuner.measure(finetune_window),
        lambda: plan(wm, ac, latent, 64, 15, p.plan_prior_weight, agent.generator))))
    result = {}
    for name, fn in fns.items():
        fn()  # warm-up
        calls = repeats * (20 if name.startswith('planning') else 1)
        cpu, wall = [], []
        for _ in range(calls):
            c, w = time.thread_time(), time.perf_counter()
            fn()
            cpu.append(time.thread_time() - c)
            wall.append(time.perf_counter() - w)
        result[name] = [1e3 * statistics.median(cpu), 1e3 * statistics.median(wall)]
    print(json.dumps(result))


def run_child(tree, repeats):
    out = subprocess.run([sys.executable, str(HERE), '--child', '--repeats', str(repeats)], check=True,
                         capture_output=True, text=True, cwd=tree,
                         env={**os.environ, 'PYTHONPATH': str(tree), 'OMP_NUM_THREADS': '1'})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--before', help='checkout of the code to compare with')
    parser.add_argument('--after', default=str(HERE.parents[1]), help='checkout (default: this one)')
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.repeats)
    if not args.before:
        parser.error('--before is required')
    runs = {'before': [], 'after': []}
    for _ in range(args.rounds):
        for side in runs:
            runs[side].append(run_child(getattr(args, side), args.repeats))
    median = lambda side, name, i: statistics.median(r[name][i] for r in runs[side])
    print(f'before: {args.before}\nafter: {args.after}\n{args.rounds} alternating rounds, median of '
          f'{args.repeats} calls each (planning: {20 * args.repeats}), 1 torch thread')
    print('| measure (ms) | before CPU | after CPU | speed-up (CPU) | before wall | after wall |')
    print('|---|---|---|---|---|---|')
    for name in MEASURES:
        b, a = median('before', name, 0), median('after', name, 0)
        print(f'| {name} | {b:.1f} | {a:.1f} | {b / a:.2f}× | {median("before", name, 1):.1f} | '
              f'{median("after", name, 1):.1f} |')


if __name__ == '__main__':
    main()
