"""Imagination planner: H-step lookahead through the world model's prior with a terminal critic value
(as LOOP does), candidates drawn from the actor and kept near it by an actor log-likelihood term
(LOOP's actor-regularised control).

Candidate 0 follows the actor's mode, so the planner always weighs the actor's own choice.

Anytime: candidates are evaluated in chunks, candidate 0 in the first; given a deadline the planner stops
before a chunk that would not finish in time and chooses among those scored, and if not even one chunk
fits it answers with the actor's mode. All sampling noise is drawn before the first chunk, in the order a
whole-batch rollout draws it, so chunking changes no candidate and the generator advances the same
whatever the deadline cut.

Cheap per decision: the stochastic state is one-hot, so every layer that reads it (the RSSM input layer,
the first layers of actor, reward, continue and critic heads) gathers and sums weight columns instead of
multiplying by mostly zeros (where a layer is a plain nn.Linear; LoRA-wrapped layers take the dense
path), and the ego vector is decoded for the chosen candidate only.
"""
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from adawm_planner.core.networks import TwoHot

CHUNK = 32  # candidates per chunk when a deadline is set: the unit of work between deadline checks


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
        """dense: (N, start) values of the dense block; after: (N, W) dense values following the one-hot
        columns (a continuous action), at input positions start + in_features - start - W on."""
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


def rollout(world_model, actor_critic, start, noise, rows, horizon):
    """Imagine candidates `rows` (a slice of the noise's K) for `horizon` steps from `start`.

    Returns actions (n, H, A), actor log-likelihoods, rewards, continue probabilities (n, H), terminal
    values (n,), and the deter (n, H, D) and stoch columns (n, H, S) of the imagined states."""
    rssm, actor = world_model.rssm, actor_critic.actor
    deter_dim, classes = rssm.deter, rssm.classes
    heads = {name: OneHotMLP(mlp, deter_dim, classes) for name, mlp in (
        ('actor', actor.mlp), ('reward', world_model.reward_head), ('cont', world_model.cont_head),
        ('critic', actor_critic.critic))}
    img_in = OneHotLinear(rssm.img_in, 0, classes)
    n = rows.stop - rows.start
    offsets = torch.arange(rssm.stoch) * classes
    action_column = rssm.stoch * classes  # where the discrete action's one-hot starts in img_in's input
    deter = start['deter'].expand(n, -1)
    columns = (start['stoch'].argmax(-1) + offsets).expand(n, -1)  # the stoch one-hot as column indices
    actor_noise, prior_noise = noise[0][:, rows], noise[1][:, rows]
    deters, stochs, actions, logps = [], [], [], []
    for t in range(horizon):
        params = actor.params(heads['actor'](columns, deter))
        if actor.discrete:
            index = (params + actor_noise[t]).argmax(-1)
            if rows.start == 0:  # candidate 0 follows the actor's mode
                index[0] = params[0].argmax()
            logps.append(params.gather(-1, index[:, None])[:, 0])
            actions.append(index)
            x = img_in(torch.cat([columns, action_column + index[:, None]], 1))
        else:
            mean, std = params
            action = (mean + std * actor_noise[t]).clamp(-1, 1)
            if rows.start == 0:
                action[0] = mean[0]
            logps.append(torch.distributions.Normal(mean, std).log_prob(action).sum(-1))
            actions.append(action)
            x = img_in(columns, after=action)
        deter = rssm.recurrent(x, deter)
        columns = (rssm.prior_logits(deter) + prior_noise[t]).argmax(-1) + offsets
        deters.append(deter)
        stochs.append(columns)
    flat_deter, flat_columns = torch.cat(deters), torch.cat(stochs)  # (H * n, ...), step-major
    per_step = lambda x: x.reshape(horizon, n).t()
    reward = TwoHot(heads['reward'](flat_columns, flat_deter), world_model.bins).mean()
    cont = torch.sigmoid(heads['cont'](flat_columns, flat_deter)[:, 0])
    value = TwoHot(heads['critic'](columns, deter), actor_critic.bins).mean()
    actions = torch.stack(actions, 1)
    if actor.discrete:
        actions = F.one_hot(actions, actor.action_dim).float()
    return {'actions': actions, 'logp': torch.stack(logps, 1), 'rewards': per_step(reward),
            'conts': per_step(cont), 'terminal_values': value, 'deter': torch.stack(deters, 1),
            'stoch': torch.stack(stochs, 1)}


@torch.inference_mode()
def plan(world_model, actor_critic, state, candidates, horizon, prior_weight, generator=None, deadline=None,
         chunk=None, chunk_estimate=None):
    """Plan from one filtered latent `state` (dict of (1, ...)): returns (first action (A,), info).

    deadline: a time.perf_counter() value by which the answer is needed, or None (score every candidate).
    Candidates are scored in chunks of `chunk` (default: CHUNK with a deadline, else all in one batch,
    the cheapest per candidate); a chunk starts only if now + the expected time of a chunk is before it;
    the expected time is the last chunk's measured time, or `chunk_estimate` (seconds, e.g. the previous
    call's info['chunk_seconds']) before the first, else 0 (the first chunk then starts whenever the
    deadline is still ahead). A caller that feeds chunk_seconds back should lower its estimate a little
    after a fallback (which measures nothing), so that a load spike does not disable planning for good.

    info: 'evaluated' (candidates scored, 0 if none fitted), 'horizon', 'fallback' (True: no candidate
    fitted, the action is the actor's mode), 'seconds' (time spent), 'chunk_seconds' (the slowest chunk's
    time, None if none ran), 'actions' (n, H, A) imagined actions of the n scored candidates (on fallback:
    the actor's mode as a (1, 1, A) plan), and unless on fallback: 'rewards', 'conts' (n, H), 'terminal_values',
    'scores' (n,), 'best' (index of the chosen candidate), 'ego' (H, E) its decoded ego vectors."""
    started = time.perf_counter()
    rssm, actor = world_model.rssm, actor_critic.actor
    chunk = chunk or (candidates if deadline is None else CHUNK)
    noise = draw_noise(candidates, horizon, actor.action_dim, rssm, actor.discrete, generator)
    results, slowest = [], None
    for first in range(0, candidates, chunk):
        expected = slowest if slowest is not None else (chunk_estimate or 0.0)
        if deadline is not None and time.perf_counter() + expected > deadline:
            break
        chunk_started = time.perf_counter()
        results.append(rollout(world_model, actor_critic, state, noise, slice(first, min(first + chunk, candidates)),
                               horizon))
        took = time.perf_counter() - chunk_started
        slowest = took if slowest is None else max(slowest, took)
    info = {'horizon': horizon, 'chunk_seconds': slowest}
    if not results:
        action = actor.mode(world_model.feat(state))[0]
        return action, {**info, 'evaluated': 0, 'fallback': True, 'actions': action[None, None], 'best': 0,
                        'seconds': time.perf_counter() - started}
    traj = {k: torch.cat([r[k] for r in results]) for k in results[0]}
    reward, cont = traj['rewards'], traj['conts']
    gamma = actor_critic.preset.gamma
    # The reward of step t counts if the episode was still running before it; the terminal value
    # counts only if it is still running after step H.
    alive = torch.cumprod(torch.cat([torch.ones_like(cont[:, :1]), cont], 1), 1)
    discount = gamma ** torch.arange(horizon, dtype=reward.dtype)
    score = ((discount * alive[:, :-1] * reward).sum(1) + gamma ** horizon * alive[:, -1] * traj['terminal_values']
             + prior_weight * traj['logp'].mean(1))
    best = int(score.argmax())
    stoch = F.one_hot(traj['stoch'][best] - torch.arange(rssm.stoch) * rssm.classes, rssm.classes).float()
    ego = world_model.decode_ego(torch.cat([traj['deter'][best], stoch.flatten(-2)], -1))
    info.update(evaluated=len(score), fallback=False, actions=traj['actions'], rewards=reward, conts=cont,
                terminal_values=traj['terminal_values'], scores=score, best=best, ego=ego,
                seconds=time.perf_counter() - started)
    return traj['actions'][best, 0], info
