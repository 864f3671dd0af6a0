"""Imagination planner: H-step lookahead through the world model's prior with a terminal critic value
(as LOOP does), candidates drawn from the actor and kept near it by an actor log-likelihood term
(LOOP's actor-regularised control).

Candidate 0 follows the actor's mode, so the planner always weighs the actor's own choice.
"""
import torch


@torch.inference_mode()
def plan(world_model, actor_critic, state, candidates, horizon, prior_weight, generator=None):
    """Plan from one filtered latent `state` (dict of (1, ...)).

    Returns (first action (A,), info) where info holds per candidate the imagined actions (K, H, A),
    rewards and continue probabilities (K, H), decoded ego vectors (K, H, E), terminal values, scores
    and the index of the chosen one."""
    gamma = actor_critic.preset.gamma
    actor = actor_critic.actor
    start = {k: v.expand(candidates, *v.shape[1:]) for k, v in state.items()}
    greedy = torch.zeros(candidates, dtype=torch.bool)
    greedy[0] = True
    logps = []

    def policy(feat):
        action, logp = actor.sample(feat, generator, greedy)
        logps.append(logp)
        return action

    traj = world_model.imagine(start, policy, horizon, generator)
    feat, reward, cont = traj['feat'], traj['reward'], traj['cont']
    # The reward of step t counts if the episode was still running before it; the terminal value
    # counts only if it is still running after step H.
    alive = torch.cumprod(torch.cat([torch.ones_like(cont[:, :1]), cont], 1), 1)
    discount = gamma ** torch.arange(horizon, dtype=reward.dtype)
    terminal_value = actor_critic.value(feat[:, -1])
    logp = torch.stack(logps, 1)
    score = ((discount * alive[:, :-1] * reward).sum(1) + gamma ** horizon * alive[:, -1] * terminal_value
             + prior_weight * logp.mean(1))
    best = int(score.argmax())
    info = {'actions': traj['action'], 'rewards': reward, 'conts': cont,
            'ego': world_model.decode_ego(feat[:, 1:]), 'terminal_values': terminal_value,
            'scores': score, 'best': best}
    return traj['action'][best, 0], info
