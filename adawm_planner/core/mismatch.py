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
- Policy mismatch ε_π, `policy_tv`: TV between the current policy and the pretrained policy on new-task
  states, exact for the discrete action set. Both policies are evaluated end to end from the same raw
  observations — the current one through the current (possibly adapted) world model, the pretrained one
  through the pretrained world model — so a world-model update also moves ε_π, which is the coupling the
  paper's Fig. 4 shows. Averaged over the window's states (the paper's max over states is reported too, as
  `policy_tv_max`; a single outlier state should not flip the decision).
"""
from __future__ import annotations

import torch

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


def decide(model_mismatch: float, policy_mismatch: float, threshold_c: float) -> str:
    """AdaWM's alignment-driven rule: the world model if ε_P > C · ε_π, otherwise the policy."""
    if threshold_c <= 0:
        raise ValueError(f'C must be positive, got {threshold_c}')
    return UPDATE_MODEL if model_mismatch > threshold_c * policy_mismatch else UPDATE_POLICY
