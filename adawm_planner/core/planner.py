"""Imagination planner: H-step lookahead through the world model's prior with a terminal critic value
(as LOOP does), candidates drawn from the actor and kept near it by an actor log-likelihood term
(LOOP's actor-regularised control).

Candidate 0 follows the actor's mode, so the planner always weighs the actor's own choice.

Anytime over the horizon: all K candidates advance one imagined step at a time (rewards and continue
probabilities included), and given a deadline the planner stops before a step that would not fit and
scores with the critic's value at the step reached: the plan a shorter horizon gives. If not even one step
fits, it answers with the actor's mode. All sampling noise is drawn up front, step by step in the order a
full rollout draws it, so a cut changes no step before it.

Cheap per decision: the stochastic state is one-hot, so every layer that reads it (the RSSM input layer,
the first layers of actor, reward, continue and critic heads) gathers and sums weight rows instead of
multiplying by mostly zeros (where a layer is a plain nn.Linear; LoRA-wrapped layers take the dense
path), and the ego vector is decoded for the chosen candidate only.
"""
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from adawm_planner.core.networks import TwoHot


class OneHotLinear:
    """A linear layer on inputs made of a dense block [0, start) and, from `start` on, groups of one-hot
    columns (the categorical latents, the discrete action), computed without building the input.

    Called with columns (N, M) long, the 1s' positions counted from `start`, and the dense part. The bias
    is folded into the rows of the first one-hot group (every input has exactly one 1 there), so one
    embedding_bag gives the one-hot part plus the bias and one addmm the dense part. Built once per
    decision, as the weights change between decisions (adapters, training)."""

    def __init__(self, layer, start, first_group):
        self.layer, self.start = layer, start
        self.fast = isinstance(layer, nn.Linear)  # a LoRA-wrapped layer takes the dense path
        if self.fast:
            weight_t = layer.weight.t()
            self.dense_weight = weight_t[:start]
            self.table = weight_t[start:].clone(memory_format=torch.contiguous_format)  # gathered by row
            if layer.bias is not None:
                self.table[:first_group] += layer.bias

    def __call__(self, columns, dense=None, after=None):
        """dense: (N, start) values of the dense block; after: (N, W) values of the input's last W
        positions, a dense block after the one-hot groups (a continuous action)."""
        if not self.fast:
            x = torch.zeros(columns.shape[0], self.layer.in_features)
            x[:, self.start:].scatter_(1, columns, 1.0)
            if dense is not None:
                x[:, :self.start] = dense
            if after is not None:
                x[:, -after.shape[1]:] = after
            return self.layer(x)
        out = F.embedding_bag(columns, self.table, mode='sum')
        if dense is not None:
            out = out.addmm(dense, self.dense_weight)
        if after is not None:
            out = out.addmm(after, self.table[-after.shape[1]:])
        return out


class OneHotMLP:
    """A networks.MLP on concat(deter, one-hot stoch) whose first layer is a OneHotLinear."""

    def __init__(self, mlp, deter_dim, classes):
        layers = list(mlp.net) + [mlp.out]
        self.first, self.rest = OneHotLinear(layers[0], deter_dim, classes), layers[1:]

    def __call__(self, columns, deter):
        x = self.first(columns, deter)
        for layer in self.rest:
            x = layer(x)
        return x


def draw_noise(candidates, horizon, action_dim, rssm, discrete, generator):
    """Per step: the actor's noise (uniform for Gumbel-max, or normal), then the prior's uniforms, in the
    order and shapes world_model.imagine with actor.sample draws them. Returns the actor's (H, K, A) and
    the prior's (H, K, S, C) noise, uniforms turned into Gumbel noise."""
    prior_size = candidates * rssm.stoch * rssm.classes
    if discrete:  # one draw gives the same numbers as the per-step draws, in order
        uniform = torch.rand((horizon, candidates * action_dim + prior_size), generator=generator)
        gumbel = uniform.clamp_(1e-20, 1.0).log_().neg_().log_().neg_()
        actor, prior = gumbel.split([candidates * action_dim, prior_size], 1)
    else:
        actor, prior = [], []
        for _ in range(horizon):
            actor.append(torch.randn((candidates, action_dim), generator=generator))
            prior.append(torch.rand(prior_size, generator=generator))
        actor = torch.stack(actor)
        prior = torch.stack(prior).clamp_(1e-20, 1.0).log_().neg_().log_().neg_()
    return (actor.reshape(horizon, candidates, action_dim),
            prior.reshape(horizon, candidates, rssm.stoch, rssm.classes))


class Rollout:
    """K candidates imagined step by step from one latent state, with the sampling noise drawn up front."""

    def __init__(self, world_model, actor_critic, start, noise):
        rssm, actor = world_model.rssm, actor_critic.actor
        self.world_model, self.actor_critic, self.noise = world_model, actor_critic, noise
        deter_dim, classes = rssm.deter, rssm.classes
        self.heads = {name: OneHotMLP(mlp, deter_dim, classes) for name, mlp in (
            ('actor', actor.mlp), ('reward', world_model.reward_head), ('cont', world_model.cont_head),
            ('critic', actor_critic.critic))}
        self.img_in = OneHotLinear(rssm.img_in, 0, classes)
        candidates = noise[0].shape[1]
        self.offsets = torch.arange(rssm.stoch) * classes
        self.deter = start['deter'].expand(candidates, -1)
        self.columns = (start['stoch'].argmax(-1) + self.offsets).expand(candidates, -1)  # stoch as columns
        self.steps = {k: [] for k in ('actions', 'logp', 'rewards', 'conts', 'deter', 'stoch')}

    def step(self):
        """Imagine step t = len(done steps) for every candidate."""
        rssm, actor = self.world_model.rssm, self.actor_critic.actor
        t, columns, deter = len(self.steps['actions']), self.columns, self.deter
        params = actor.params(self.heads['actor'](columns, deter))
        if actor.discrete:
            index = (params + self.noise[0][t]).argmax(-1)
            index[0] = params[0].argmax()  # candidate 0 follows the actor's mode
            logp = params.gather(-1, index[:, None])[:, 0]
            action = index
            x = self.img_in(torch.cat([columns, rssm.stoch * rssm.classes + index[:, None]], 1))
        else:
            mean, std = params
            action = (mean + std * self.noise[0][t]).clamp(-1, 1)
            action[0] = mean[0]
            logp = torch.distributions.Normal(mean, std).log_prob(action).sum(-1)
            x = self.img_in(columns, after=action)
        self.deter = rssm.recurrent(x, deter)
        self.columns = (rssm.prior_logits(self.deter) + self.noise[1][t]).argmax(-1) + self.offsets
        wm = self.world_model
        reward = TwoHot(self.heads['reward'](self.columns, self.deter), wm.bins).mean()
        cont = torch.sigmoid(self.heads['cont'](self.columns, self.deter)[:, 0])
        for key, value in zip(self.steps, (action, logp, reward, cont, self.deter, self.columns)):
            self.steps[key].append(value)

    def result(self):
        """Per candidate: actions (K, h, A), actor log-likelihoods, rewards, continue probabilities (K, h),
        the critic's value at the last state (K,), the imagined deter (K, h, D) and stoch columns (K, h, S)."""
        out = {k: torch.stack(v, 1) for k, v in self.steps.items()}
        actor = self.actor_critic.actor
        if actor.discrete:
            out['actions'] = F.one_hot(out['actions'], actor.action_dim).float()
        out['terminal_values'] = TwoHot(self.heads['critic'](self.columns, self.deter), self.actor_critic.bins).mean()
        return out


@torch.inference_mode()
def plan(world_model, actor_critic, state, candidates, horizon, prior_weight, generator=None, deadline=None,
         step_estimate=None):
    """Plan from one filtered latent `state` (dict of (1, ...)): returns (first action (A,), info).

    deadline: a time.perf_counter() value by which the answer is needed, or None (the full horizon).
    Before each imagined step the planner checks that two steps fit before it (the step, and the scoring
    after it, which costs less than one); a step's expected time is the mean of the steps measured in this
    call, or `step_estimate` (seconds, e.g. the previous call's info['step_seconds']) before the first, else
    0. (The mean, not the slowest: on shared cores one preempted step would otherwise stop planning for
    many decisions.) A step once started runs to its end, so a wrong estimate overshoots by about a step.

    info: 'horizon' (steps imagined: `horizon`, fewer if the deadline cut it, 0 on fallback), 'evaluated'
    (candidates scored: `candidates`, or 0), 'fallback' (True: not one step fitted, the action is the
    actor's mode), 'seconds' (time spent), 'step_seconds' (mean time of a step, None if none ran), 'actions'
    (K, h, A) imagined actions (on fallback: the actor's mode as a (1, 1, A) plan), and unless on fallback
    'rewards', 'conts' (K, h), 'terminal_values', 'scores' (K,), 'best' (the chosen candidate's index) and
    'ego' (h, E) its decoded ego vectors. A plan cut at h steps is the plan `horizon=h` gives."""
    started = time.perf_counter()
    rssm, actor = world_model.rssm, actor_critic.actor
    noise = draw_noise(candidates, horizon, actor.action_dim, rssm, actor.discrete, generator)
    rollout, stepping = Rollout(world_model, actor_critic, state, noise), 0.0
    for done in range(horizon):
        expected = stepping / done if done else (step_estimate or 0.0)
        if deadline is not None and time.perf_counter() + 2 * expected > deadline:
            break
        step_started = time.perf_counter()
        rollout.step()
        stepping += time.perf_counter() - step_started
    steps = len(rollout.steps['actions'])
    info = {'step_seconds': stepping / steps if steps else None, 'horizon': steps}
    if steps == 0:
        action = actor.mode(world_model.feat(state))[0]
        return action, {**info, 'evaluated': 0, 'fallback': True, 'actions': action[None, None], 'best': 0,
                        'seconds': time.perf_counter() - started}
    traj = rollout.result()
    reward, cont = traj['rewards'], traj['conts']
    gamma = actor_critic.preset.gamma
    # The reward of step t counts if the episode was still running before it; the terminal value
    # counts only if it is still running after the last step.
    alive = torch.cumprod(torch.cat([torch.ones_like(cont[:, :1]), cont], 1), 1)
    discount = gamma ** torch.arange(steps, dtype=reward.dtype)
    score = ((discount * alive[:, :-1] * reward).sum(1) + gamma ** steps * alive[:, -1] * traj['terminal_values']
             + prior_weight * traj['logp'].mean(1))
    best = int(score.argmax())
    stoch = F.one_hot(traj['stoch'][best] - torch.arange(rssm.stoch) * rssm.classes, rssm.classes).float()
    ego = world_model.decode_ego(torch.cat([traj['deter'][best], stoch.flatten(-2)], -1))
    info.update(evaluated=candidates, fallback=False, actions=traj['actions'], rewards=reward, conts=cont,
                terminal_values=traj['terminal_values'], scores=score, best=best, ego=ego,
                seconds=time.perf_counter() - started)
    return traj['actions'][best, 0], info
