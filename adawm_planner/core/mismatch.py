"""Mismatch identification: how far the world model and the policy are from the new task.

AdaWM (ICLR 2025) bounds the performance gap after a task shift by a dynamics-model term TV(P, P̂) plus a
policy term TV(π, π̂), and each finetuning step updates only the side whose term dominates:
update the world model if ε_P > C · ε_π, else the policy.

Estimators (all total-variation distances, so all in [0, 1]; 0 for identical, 1 for disjoint support):

- Model mismatch ε_P, `prior_posterior_tv`: on a window of new-task transitions, the world model's prior
  p(z_t | h_t) is what it *predicted* the next latent would be; the posterior q(z_t | h_t, o_t) is what the
  new task's observation *showed*. Their TV, per categorical latent factor, averaged over factors and time
  steps, is the model's one-step prediction error in distribution. (TV of the product of factors would be
  ≥ the mean, and saturates at 1 for 32 factors; the mean keeps the scale usable for the C·ε_π rule.)
  Drawback: it is not zero on the pretraining task itself, since the prior is a prediction; compare against
  `reference` levels measured on pretraining data when reading it.
- Model mismatch, second view, `visitation_tv`: TV between the state-action visitation of new-task data and
  of the pretraining buffer, in latent space, as the paper states it. The joint visitation over all latent
  factors is far too sparse to histogram, so per factor the joint histogram of (class of that factor,
  action) is compared and the TVs averaged over factors. Reported beside ε_P; the decision uses ε_P.
- Policy mismatch, the improvement view, `improvement_scores`: at states of the window, how much better
  than the actor's choice the best first action looks in the *current* model's imagination (the paper's
  ε_π is a distance from the current policy to the new task's best one). It cannot read a dynamics shift
  as a policy one while the model is still wrong about the new dynamics; once the model is repaired it reads
  what the repaired imagination offers the actor. The rule reads it when FinetuneConfig.policy_signal says so.
- Policy mismatch ε_π, `policy_tv`: TV between the current policy and the pretrained policy on new-task
  states, exact for the discrete action set. Both policies are evaluated end to end from the same raw
  observations — the current one through the current (possibly adapted) world model, the pretrained one
  through the pretrained world model — so a world-model update also moves ε_π, which is the coupling the
  paper's Fig. 4 shows. Averaged over the window's states (the paper's max over states is reported too, as
  `policy_tv_max`; a single outlier state should not flip the decision).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from adawm_planner.core.networks import OneHotLinear, OneHotMLP, TwoHot, gumbel

UPDATE_MODEL = 'model'
UPDATE_POLICY = 'policy'


def tv(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """TV distance between categorical distributions along the last axis: ½ Σ |p − q|."""
    return 0.5 * (p - q).abs().sum(-1)


def prior_posterior_tv(prior_probs: torch.Tensor, post_probs: torch.Tensor) -> torch.Tensor:
    """Mean per-factor TV between prior and posterior latents. Inputs (..., factors, classes); scalar out."""
    return tv(prior_probs, post_probs).mean()


def visitation_tv(codes_new: torch.Tensor, actions_new: torch.Tensor,
                  codes_ref: torch.Tensor, actions_ref: torch.Tensor, classes: int, num_actions: int) -> torch.Tensor:
    """Mean over factors of TV between (class, action) visitation histograms.

    codes_*: (N, factors) integer class index of each latent factor; actions_*: (N,) integer actions."""
    def histogram(codes, actions):
        cells = codes.long() * num_actions + actions.long().unsqueeze(-1)         # (N, factors)
        counts = torch.zeros(codes.shape[-1], classes * num_actions, dtype=torch.float64)
        counts.scatter_add_(1, cells.T, torch.ones_like(cells.T, dtype=torch.float64))
        return counts / counts.sum(-1, keepdim=True)
    return tv(histogram(codes_new, actions_new), histogram(codes_ref, actions_ref)).mean().float()


def policy_tv(current_probs: torch.Tensor, pretrained_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, max) over states of TV between the two action distributions. Inputs (N, actions)."""
    per_state = tv(current_probs, pretrained_probs)
    return per_state.mean(), per_state.max()


def decide(model_mismatch: float, policy_mismatch: float, threshold_c: float, policy_failures: float = 0.0) -> str | None:
    """AdaWM's alignment-driven rule: the world model if ε_P > C · ε_π, otherwise the policy — and neither
    (None) when both read 0, unless the latest episodes fail beyond the pretrained agent's own rate
    (`policy_failures`, the episode-level ε_π; then the policy).

    The calibrated estimates are 0 on windows the pretraining task itself could give, so "both 0" is no
    evidence that either side is out of line and a step could only drift (on the steering + traffic pair,
    once the prior was repaired, 180 of an AdaWM run's 368 steps had both at 0 and each trained the policy).
    Failing episodes are such evidence — a goal or traffic change the per-step reward does not show
    (detection AUROC 0.97-1.0 on those pairs, docs/results/detection.csv) — but they do not say which side
    made them fail: a wrong model fails episodes too. So they decide whether to act when the per-step
    signals are silent, never the side against ε_P (measured: taking ε_π as the larger of the two sent the
    lagged car's windows to the model on 63 % instead of 98 %; docs/adaptation.md)."""
    if threshold_c <= 0:
        raise ValueError(f'C must be positive, got {threshold_c}')
    if model_mismatch > threshold_c * policy_mismatch:
        return UPDATE_MODEL
    return UPDATE_POLICY if policy_mismatch > 0 or policy_failures > 0 else None


# ---- calibrated shift estimators ------------------------------------------------------------------------
# Per-step scores, compared as distributions against the same scores of the frozen pretrained agent on its
# own pretraining task (a reference shipped beside the checkpoint); see docs/adaptation.md for the math.

def open_loop_priors(world_model, posts: dict, actions: torch.Tensor, is_first: torch.Tensor, horizon: int,
                     generator=None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The k-step open-loop prior p_k(z_t): the model rolled `horizon` steps from the posterior at t − k with
    the actions actually taken. posts: the filter's posteriors (B, T, ...); actions (B, T, A) (step t holds
    a_{t−1}); is_first (B, T). Returns (b, t, state): the indices of the steps where t − k lies in t's episode
    and sequence, and the rolled state there (dict of (N, ...))."""
    batch, length = is_first.shape
    steps = torch.arange(length).expand(batch, length)
    start = torch.cummax(torch.where(is_first, steps, torch.zeros_like(steps)), 1).values
    b, t = (steps - horizon >= start).nonzero(as_tuple=True)
    state = {k: v[b, t - horizon] for k, v in posts.items() if k in ('deter', 'stoch', 'logits')}
    if len(t):
        for back in range(horizon - 1, -1, -1):
            state = world_model.rssm.img_step(state, actions[b, t - back], generator)
    return b, t, state


def categorical_kl(post_logits: torch.Tensor, prior_logits: torch.Tensor) -> torch.Tensor:
    """KL(post ‖ prior) of log-probabilities (..., factors, classes), summed over the factors."""
    return (post_logits.exp() * (post_logits - prior_logits)).sum((-2, -1))


def open_loop_kl(world_model, posts: dict, actions: torch.Tensor, is_first: torch.Tensor, horizon: int,
                 generator=None) -> torch.Tensor:
    """Per-step k-step open-loop surprise: KL(q(z_t | h_t, o_t) ‖ p_k(z_t)) summed over latent factors, p_k
    from open_loop_priors. Returns (B, T), NaN where t − k is before the start of t's episode or sequence."""
    b, t, state = open_loop_priors(world_model, posts, actions, is_first, horizon, generator)
    scores = torch.full(is_first.shape, float('nan'))
    if len(t):
        scores[b, t] = categorical_kl(posts['logits'][b, t], state['logits'])
    return scores


# the improvement view: every 4th state of a 64-step window (16), 4 prior draws per first action (16 x 15
# x 4 rollouts of 15 steps: ≈ 6x the rest of a measurement, 0.7x a policy update, bench_adaptation.py;
# 8 draws cost 2x); its reference is scored on every 4th step too, so windows and null windows have the
# same spacing
IMPROVEMENT_STRIDE = 4
IMPROVEMENT_PARTICLES = 4


@torch.no_grad()
def improvement_scores(world_model, actor_critic, states: dict, horizon: int, gamma: float,
                       particles: int = IMPROVEMENT_PARTICLES, generator=None) -> np.ndarray:
    """Per state s of `states` (dict of (N, ...) latents), what the current model offers over the actor:

      Q(s, a) = mean over particles of Σ_{t=1..H} γ^(t−1) alive_t r̂_t + γ^H alive_H V(s_H)   (a, then the actor)
      score(s) = (max_a Q(s, a) − Σ_a π(a|s) Q(s, a)) / the actor-critic's return scale

    with the same prior and actor noise for every first action (common random numbers), so the scores
    compare actions rather than draws. ≥ 0; (N,) float64. Discrete actors only. All N · actions · particles
    rollouts run as one batch on the latents' one-hot columns."""
    rssm, actor = world_model.rssm, actor_critic.actor
    n, actions, stoch, classes = states['deter'].shape[0], actor.action_dim, rssm.stoch, rssm.classes
    rows = n * actions * particles

    def per_row(x):   # (n, ...) -> (rows, ...), each state repeated for every first action and particle
        return x[:, None, None].expand(n, actions, particles, *x.shape[1:]).reshape(rows, *x.shape[1:])

    def shared(shape):   # noise drawn per state and particle, the same for every first action
        noise = gumbel((horizon, n, 1, particles, *shape), generator)
        return noise.expand(horizon, n, actions, particles, *shape).reshape(horizon, rows, *shape)
    prior_noise, actor_noise = shared((stoch, classes)), shared((actions,))
    img_in = OneHotLinear(rssm.img_in, 0, classes)
    policy, reward_head, cont_head, critic = (OneHotMLP(m, rssm.deter, classes) for m in (
        actor.mlp, world_model.reward_head, world_model.cont_head, actor_critic.critic))
    offsets = torch.arange(stoch) * classes
    start_columns = states['stoch'].argmax(-1) + offsets
    columns, deter = per_row(start_columns), per_row(states['deter'])
    index = torch.arange(actions)[None, :, None].expand(n, actions, particles).reshape(rows)   # first actions
    all_columns, all_deter = [], []
    for t in range(horizon):
        deter = rssm.recurrent(img_in(torch.cat([columns, stoch * classes + index[:, None]], 1)), deter)
        columns = (rssm.prior_logits(deter) + prior_noise[t]).argmax(-1) + offsets
        all_columns.append(columns)
        all_deter.append(deter)
        if t < horizon - 1:
            index = (actor.params(policy(columns, deter)) + actor_noise[t]).argmax(-1)
    later_columns, later_deter = torch.stack(all_columns, 1).flatten(0, 1), torch.stack(all_deter, 1).flatten(0, 1)
    reward = TwoHot(reward_head(later_columns, later_deter), world_model.bins).mean().view(rows, horizon)
    alive = torch.cumprod(torch.sigmoid(cont_head(later_columns, later_deter)[:, 0]).view(rows, horizon), 1)
    value = TwoHot(critic(columns, deter), actor_critic.bins).mean()
    discount = gamma ** torch.arange(horizon, dtype=reward.dtype)
    q = ((discount * alive * reward).sum(1) + gamma ** horizon * alive[:, -1] * value).view(n, actions, particles)
    q = q.mean(-1)
    pi = actor.params(policy(start_columns, states['deter'])).exp()
    scale = torch.clamp(actor_critic.return_hi - actor_critic.return_lo, min=1.0)
    return ((q.max(-1).values - (pi * q).sum(-1)) / scale).double().numpy()


def ks_excess(window: np.ndarray, reference_sorted: np.ndarray) -> float:
    """One-sided Kolmogorov-Smirnov distance sup_x F_ref(x) − F_window(x) ≥ 0 (right-continuous empirical
    CDFs, so ties count correctly): how far the window's scores sit above the reference's. A lower bound
    on the TV distance between the two score distributions."""
    window = window[np.isfinite(window)]
    if len(window) == 0:
        return 0.0
    return float(ks_excess_sorted(np.sort(window)[None], reference_sorted)[0])


def ks_excess_sorted(windows: np.ndarray, reference_sorted: np.ndarray) -> np.ndarray:
    """ks_excess of each row of `windows` (W, m), each row sorted and finite. F_window is constant between
    two window values and F_ref only rises, so F_ref − F_window peaks just below a window value: just below
    the j-th smallest (0-based), F_window is at most j/m, and exactly j/m at the first of tied values (later
    ties give smaller terms). O(m · log reference) per window, no pass over the reference."""
    below = np.searchsorted(reference_sorted, windows, side='left') / len(reference_sorted)
    return np.maximum(0.0, (below - np.arange(windows.shape[1]) / windows.shape[1]).max(axis=1))


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X ≥ k) for X ~ Binomial(n, p)."""
    return float(sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(max(k, 0), n + 1)))


def failure_excess(failures, base_rate: float, level: float = 0.05) -> float:
    """The episode-level policy shift in [0, 1]: how far the share of failed episodes among the latest ones
    exceeds `base_rate` (the pretrained agent's own failure rate on its pretraining task), rescaled as
    (rate − base) / (1 − base); 0 unless a one-sided binomial test rejects the base rate at `level`, so it
    reads 0 on the pretraining task on all but ≈ `level` of windows, as the step-level estimates do.
    failures: 0/1 per finished episode."""
    failures = np.asarray(failures, np.float64)
    n, k = len(failures), int(failures.sum())
    if n == 0 or binomial_tail(k, n, base_rate) >= level:
        return 0.0
    return float(max(0.0, (k / n - base_rate) / (1.0 - base_rate)))


def windows_of(stream: np.ndarray, length: int, stride: int) -> list[np.ndarray]:
    return [stream[i:i + length] for i in range(0, len(stream) - length + 1, stride)]


class Reference:
    """Score distributions of the frozen pretrained agent on held-out pretraining-task episodes.

    Two halves of the reference episodes: `cdf` (sorted scores the window is compared against) and `null`
    (scores in time order, cut into windows to learn how large the KS distance of a same-task window gets
    by chance). For each signal — 'model' (open-loop surprise, model_scores), 'reward' (negated reward,
    reward_scores) and, where present, 'improvement' (improvement_scores of every IMPROVEMENT_STRIDE-th
    step), higher = worse for all — an estimate is the excess of the window's KS distance over
    the null's 95th percentile for that window length, rescaled to [0, 1]: ≈ 0 on the pretraining task by
    construction."""
    QUANTILE = 0.95

    def __init__(self, horizon: int, cdf: dict, null: dict, meta: dict | None = None, failures: dict | None = None):
        """failures: per driving mode ('actor', 'sample'), 0/1 per reference episode (1 = not a success)."""
        self.horizon, self.meta = int(horizon), dict(meta or {})
        self.cdf = {k: np.sort(np.asarray(v, np.float64)[np.isfinite(v)]) for k, v in cdf.items()}
        self.null = {k: np.asarray(v, np.float64)[np.isfinite(v)] for k, v in null.items()}
        self.failures = {k: np.asarray(v, np.float64) for k, v in (failures or {}).items()}
        self._thresholds = {}

    def failure_rate(self, mode: str) -> float | None:
        """The pretrained agent's failure rate on its own task driving in `mode` (plan reads the actor's: the
        two scored alike, docs/world_model.md), shrunk towards ½ by half an episode so that a clean reference
        does not make one failure significant; None where the reference has no outcomes for it."""
        outcomes = self.failures.get(mode)
        if outcomes is None and mode == 'plan':
            outcomes = self.failures.get('actor')
        if outcomes is None or len(outcomes) == 0:
            return None
        return float((outcomes.sum() + 0.5) / (len(outcomes) + 1.0))

    def estimate_failures(self, failures, mode: str) -> float:
        """Calibrated episode-level policy shift in [0, 1] (failure_excess) of the latest episodes' outcomes;
        0 without outcomes on either side."""
        rate = self.failure_rate(mode)
        return 0.0 if rate is None else failure_excess(failures, rate)

    def threshold(self, signal: str, length: int) -> float:
        """95th percentile of the KS distance on same-task windows of `length` steps (stride length/8)."""
        key = (signal, length)
        if key not in self._thresholds:
            null = windows_of(self.null[signal], length, max(1, length // 8))
            if len(null) < 20:
                raise ValueError(f'reference too short for {length}-step windows ({len(self.null[signal])} null steps)')
            distances = ks_excess_sorted(np.sort(np.stack(null), axis=1), self.cdf[signal])
            self._thresholds[key] = float(np.quantile(distances, self.QUANTILE))
        return self._thresholds[key]

    def estimate(self, signal: str, window_scores: np.ndarray) -> float:
        """Calibrated shift of `signal` in [0, 1] for one window of per-step scores (NaNs ignored)."""
        finite = np.asarray(window_scores, np.float64)
        finite = finite[np.isfinite(finite)]
        q = self.threshold(signal, max(len(finite), 1))
        if q >= 1.0:   # windows this short reach any KS distance by chance: nothing is detectable
            return 0.0
        return float(np.clip((ks_excess(finite, self.cdf[signal]) - q) / (1 - q), 0.0, 1.0))

    def save(self, path) -> None:
        tensors = {f'{part}.{k}': torch.as_tensor(v, dtype=torch.float32) for part, d in
                   (('cdf', self.cdf), ('null', self.null), ('failures', self.failures)) for k, v in d.items()}
        save_file(tensors, str(path), metadata={'format': REFERENCE_FORMAT, 'horizon': str(self.horizon),
                                                  'meta': json.dumps(self.meta)})

    @classmethod
    def load(cls, path) -> 'Reference':
        from safetensors import safe_open
        with safe_open(str(path), 'pt') as f:
            metadata = f.metadata() or {}
        if metadata.get('format') != REFERENCE_FORMAT:
            raise ValueError(f'{path}: format {metadata.get("format")!r}, expected {REFERENCE_FORMAT!r}')
        tensors = load_file(str(path))
        parts = {'cdf': {}, 'null': {}, 'failures': {}}   # no failures: a reference from before they were kept
        for name, value in tensors.items():
            part, signal = name.split('.', 1)
            if part not in parts:
                raise ValueError(f'{path}: unexpected tensor {name!r}')
            parts[part][signal] = value.double().numpy()
        return cls(int(metadata['horizon']), parts['cdf'], parts['null'], json.loads(metadata.get('meta', '{}')),
                   parts['failures'])


REFERENCE_FORMAT = 'adawm-mismatch-reference/1'
REFERENCE_FILE = 'mismatch_reference.safetensors'


def load_reference(checkpoint_dir) -> Reference:
    """A checkpoint's mismatch reference, checked against the sha256 in its model.json (`mismatch_reference`;
    written by `python -m adawm_planner.experiments.mismatch_reference`). CheckpointError if absent or changed."""
    from adawm_planner.core.checkpoint import CheckpointError, read_meta, sha256_file
    checkpoint_dir = Path(checkpoint_dir)
    entry = read_meta(checkpoint_dir).get('mismatch_reference')
    if entry is None:
        raise CheckpointError(f'{checkpoint_dir} has no mismatch reference '
                              '(python -m adawm_planner.experiments.mismatch_reference)')
    path = checkpoint_dir / entry['file']
    if not path.is_file() or sha256_file(path) != entry['sha256']:
        raise CheckpointError(f'{path}: missing, or its sha256 does not match model.json')
    return Reference.load(path)


@torch.no_grad()
def model_scores(world_model, posts: dict, action: torch.Tensor, is_first: torch.Tensor, horizon: int,
                 generator=None) -> np.ndarray:
    """ε_P's per-step score of filtered sequences (posts from world_model.observe, (B, T, ...)): the
    `horizon`-step open-loop surprise, flattened to (B·T,); NaN where undefined."""
    return open_loop_kl(world_model, posts, action, is_first, horizon, generator).flatten().numpy()


def reward_scores(reward: torch.Tensor, is_first: torch.Tensor) -> np.ndarray:
    """ε_π's per-step score: the negated reward received (higher = worse), flattened; NaN at episode and
    sequence starts, which carry no reward."""
    scores = -reward.double().clone()
    scores[is_first] = float('nan')
    return scores.flatten().numpy()
