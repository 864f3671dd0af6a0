"""Shift detection: does the mismatch estimator tell new-task data from pretraining-task data?

    .venv/bin/python bench/bench_mismatch.py [--checkpoint checkpoints/right_turn-moderate-small] [--steps 4000]

For every shift pair (config/tasks.yaml) and for the pretraining task under other seeds (`same_task`), the
frozen pretrained agent drives `--steps` steps (actor mode); so does it on held-out pretraining-task
episodes. Both streams are cut into windows of 64 and 256 steps (stride a quarter window), and each
estimator's window statistic is compared between them: AUROC (new-task windows scoring above held-out
ones), and the false-positive rate — the fraction of held-out windows on which the estimator reports a
shift at its operating threshold. Estimators:

  open_loop_kl_ks   ε_P in use: calibrated one-sided KS of the k-step open-loop surprise against the
                    checkpoint's mismatch reference; reports a shift when ε_P > 0
  reward_or_failures  ε_π in use: the policy side flagged when either of the next two is above 0 (ranked by
                    the larger; the rule weighs only the step-level part against ε_P, mismatch.decide)
  reward_ks         its step-level part: the same calibration of the negated reward received
  episode_failures  its episode-level part: the failure rate of the latest 8 episodes finished by the
                    window's end against the pretrained agent's own (binomial test, core/mismatch.py
                    failure_excess); its AUROC ranks windows by that failure rate
  one_step_kl_ks    the one-step (filter) surprise, same calibration: k = 1 for comparison
  improvement_ks    the improvement view of ε_π (what the model shows the actor could gain, every 4th step;
                    core/mismatch.py), same calibration; in use with `--policy-signal improvement`
  prior_posterior_tv  the previous ε_P (mean per-factor TV); its rule fires the model side whenever
                    ε_P > C·ε_π, and ε_π = 0 for the frozen agent, so every window is a "shift"

Writes docs/results/detection.csv (pair, estimator, window, auroc, fpr, in_use) and prints a table.
Seeds: held-out 30000+, same-task 40000+, new tasks 50000+ (none used by training, evaluation or the
reference, which uses 20000+).
"""
import argparse
import csv
import time
from pathlib import Path

import numpy as np
import torch

from adawm_planner.experiments import mismatch_reference
from adawm_planner.core import mismatch
from adawm_planner.core.checkpoint import load_checkpoint
from adawm_planner.core.config import FinetuneConfig
from adawm_planner.share import package_share
from adawm_planner.sim import shift_pairs

HELD_OUT_SEED, SAME_TASK_SEED, NEW_TASK_SEED = 30_000, 40_000, 50_000
WINDOWS = (64, 256)
POLICY_ESTIMATOR = 'reward_or_failures'
IN_USE = ('open_loop_kl_ks', POLICY_ESTIMATOR)
OUTCOME_WINDOW = FinetuneConfig.outcome_window
FIELDS = ['pair', 'estimator', 'window', 'auroc', 'fpr', 'in_use']


def auroc(negatives, positives) -> float:
    """P(positive window scores above a negative one), ties counted half."""
    neg, pos = np.asarray(negatives)[None], np.asarray(positives)[:, None]
    return float((pos > neg).mean() + 0.5 * (pos == neg).mean())


@torch.no_grad()
def streams(agent, task, steps, seed, horizon):
    """Per-step scores of `steps` steps of the frozen agent on `task`, concatenated over episodes."""
    out = {'model': [], 'reward': [], 'one_step': [], 'tv': [], 'improvement': [], 'failed': [], 'length': []}
    for i, episode in enumerate(mismatch_reference.collect(agent, task, 10_000, seed, max_steps=steps)):
        out['failed'].append([float(episode.pop('failed'))])
        out['length'].append([len(episode['reward'])])
        batch = {k: torch.as_tensor(v)[None] for k, v in episode.items()}
        generator = torch.Generator().manual_seed(seed + i)
        posts, priors = agent.world_model.observe(batch['bev'], batch['ego'], batch['action'], batch['is_first'],
                                                  generator=generator)
        model = mismatch.model_scores(agent.world_model, posts, batch['action'], batch['is_first'], horizon, generator)
        one = mismatch.open_loop_kl(agent.world_model, posts, batch['action'], batch['is_first'], 1, generator)
        tv = mismatch.tv(priors['logits'].exp(), posts['logits'].exp()).mean(-1)
        # every IMPROVEMENT_STRIDE-th step, NaN between: a window holds as many scores as the rule's does
        improvement = np.full(len(episode['reward']), np.nan)
        states = {k: posts[k][0, ::mismatch.IMPROVEMENT_STRIDE] for k in ('deter', 'stoch')}
        improvement[::mismatch.IMPROVEMENT_STRIDE] = mismatch.improvement_scores(
            agent.world_model, agent.actor_critic, states, agent.preset.horizon, agent.preset.gamma,
            generator=generator)
        out['improvement'].append(improvement)
        for key, value in (('model', model), ('reward', mismatch.reward_scores(batch['reward'], batch['is_first'])),
                           ('one_step', one.flatten().numpy()), ('tv', tv.flatten().numpy())):
            out[key].append(value)
    out = {k: np.concatenate(v) for k, v in out.items()}
    out['ends'] = np.cumsum(out.pop('length'))   # stream index just past each episode
    return out


def window_stats(stream, reference, one_step_reference, length):
    """Per window: (statistic for AUROC, calibrated estimate; > 0 reports a shift) of every estimator."""
    stats = {}
    starts = range(0, len(stream['model']) - length + 1, length // 4)   # as windows_of cuts them
    latest = [stream['failed'][stream['ends'] <= start + length][-OUTCOME_WINDOW:] for start in starts]
    stats['episode_failures'] = [(float(np.mean(f)) if len(f) else 0.0, reference.estimate_failures(f, 'actor'))
                                 for f in latest]
    for name, key, ref, signal in (('open_loop_kl_ks', 'model', reference, 'model'),
                                   ('reward_ks', 'reward', reference, 'reward'),
                                   ('one_step_kl_ks', 'one_step', one_step_reference, 'model'),
                                   ('improvement_ks', 'improvement', reference, 'improvement')):
        rows = []
        for window in mismatch.windows_of(stream[key], length, length // 4):
            finite = window[np.isfinite(window)]
            rows.append((mismatch.ks_excess(finite, ref.cdf[signal]), ref.estimate(signal, finite)))
        stats[name] = rows
    stats['prior_posterior_tv'] = [(float(np.mean(w)), 1.0)   # the old rule: ε_P > C·0 on every window
                                   for w in mismatch.windows_of(stream['tv'], length, length // 4)]
    combined = [max(a[1], b[1]) for a, b in zip(stats['reward_ks'], stats['episode_failures'])]
    stats[POLICY_ESTIMATOR] = [(e, e) for e in combined]   # ranked by the estimate itself (ties count half)
    return stats


def decisions(stats) -> dict:
    """Means of the calibrated ε_P, ε_π (step level) and episode-level ε_π over windows, and the share of
    windows on which the rule (mismatch.decide) would update the model, the policy, or neither, for C = 1
    and C = 5, and for C = 1 with the improvement view as the step-level ε_π ('1i')."""
    eps = {name: np.array([e for _, e in stats[key]]) for name, key in
           (('model', 'open_loop_kl_ks'), ('policy', 'reward_ks'), ('episodes', 'episode_failures'),
            ('improvement', 'improvement_ks'))}
    out = {f'eps_{name}': values.mean() for name, values in eps.items()}
    for label, c, policy in (('1', 1.0, 'policy'), ('5', 5.0, 'policy'), ('1i', 1.0, 'improvement')):
        chosen = [mismatch.decide(m, p, c, f) for m, p, f in zip(eps['model'], eps[policy], eps['episodes'])]
        out.update({f'{side}_share_c{label}': np.mean([d == side for d in chosen])
                    for side in ('model', 'policy', None)})
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--checkpoint', default=str(package_share() / 'checkpoints' / 'right_turn-moderate-small'))
    parser.add_argument('--steps', type=int, default=4000, help='steps of data per task')
    parser.add_argument('--out', default=str(package_share() / 'docs' / 'results' / 'detection.csv'))
    parser.add_argument('--threads', type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.time()
    agent, meta = load_checkpoint(args.checkpoint)
    reference = mismatch.load_reference(args.checkpoint)
    pretrain = meta['task']
    # the k = 1 comparison needs its own reference: same episodes and halves as the shipped one
    one_step_reference = mismatch_reference.build(agent, pretrain, reference.meta['episodes'], horizon=1,
                                                  seed=reference.meta['seed'], signals=('model',))
    held = streams(agent, pretrain, args.steps, HELD_OUT_SEED, reference.horizon)
    tasks = {'same_task': (pretrain, SAME_TASK_SEED)}
    tasks.update({name: (pair['finetune'], NEW_TASK_SEED) for name, pair in shift_pairs().items()
                  if pair['pretrain'] == pretrain})
    rows, rule = [], {}
    for pair, (task, seed) in tasks.items():
        new = streams(agent, task, args.steps, seed, reference.horizon)
        for length in WINDOWS:
            negatives = window_stats(held, reference, one_step_reference, length)
            positives = window_stats(new, reference, one_step_reference, length)
            if length == max(WINDOWS):
                rule[pair] = decisions(positives)
            for estimator in negatives:
                rows.append({'pair': pair, 'estimator': estimator, 'window': length,
                             'auroc': round(auroc([s for s, _ in negatives[estimator]],
                                                  [s for s, _ in positives[estimator]]), 3),
                             'fpr': round(float(np.mean([e > 0 for _, e in negatives[estimator]])), 3),
                             'in_use': estimator in IN_USE})
        print(f'{pair} ({task}) done, {time.time() - started:.0f} s', flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, 'w', newline='') as f:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    estimators = list(dict.fromkeys(r['estimator'] for r in rows))
    print(f'\nAUROC (window 64 / 256); FPR at 256 — {args.steps} steps per task, k = {reference.horizon}')
    print('| pair | ' + ' | '.join(estimators) + ' |\n|---|' + '---|' * len(estimators))
    for pair in tasks:
        cell = lambda e: '{} / {} (FPR {})'.format(*[next(r[k] for r in rows if r['pair'] == pair and
                                                         r['estimator'] == e and r['window'] == w)
                                                    for w, k in ((64, 'auroc'), (256, 'auroc'), (256, 'fpr'))])
        print(f'| {pair} | ' + ' | '.join(cell(e) for e in estimators) + ' |')
    print(f'\nThe rule on the frozen agent\'s windows of {max(WINDOWS)} steps: mean ε_P, ε_π (step level), '
          'episode-level ε_π, and the share of windows on which it updates the model / the policy / neither')
    print('| pair | ε_P | ε_π | ε_π episodes | ε_π improvement | C = 1: model / policy / none | C = 5 | '
          'C = 1, improvement ε_π |\n|---|---|---|---|---|---|---|---|')
    for pair, d in rule.items():
        shares = lambda c: ' / '.join(f'{d[f"{side}_share_c{c}"]:.2f}' for side in ('model', 'policy', None))
        print(f'| {pair} | {d["eps_model"]:.2f} | {d["eps_policy"]:.2f} | {d["eps_episodes"]:.2f} | '
              f'{d["eps_improvement"]:.2f} | {shares(1)} | {shares(5)} | {shares("1i")} |')
    print(f'wall {time.time() - started:.0f} s')


if __name__ == '__main__':
    main()
