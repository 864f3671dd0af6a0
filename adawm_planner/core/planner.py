"""Imagination planner: H-step lookahead through the world model's prior with a terminal critic value
(as LOOP does), candidates drawn from the actor and kept near it by an actor log-likelihood term
(LOOP's actor-regularised control).

Candidate 0 follows the actor's mode, so the planner always weighs the actor's own choice.

With `search` knobs (PlannerConfig: iterations > 1, discrete actions) that first round seeds a CEM-style
search (TD-MPC's loop, with per-step categoricals for discrete actions): later rounds imagine open-loop
sequences drawn from per-step action distributions refitted to the best sequences so far, all scored under
the same few prior draws, so that scores compare actions rather than luck; the answer is the best of them.

Anytime over the horizon: all K candidates advance one imagined step at a time, and given a deadline the
planner stops before a step that would not fit (with the scoring of the steps taken) and scores with the
critic's value at the step reached: the plan a shorter horizon gives. Rewards and continue probabilities
of all steps taken are computed in one batch when scoring (H·K rows instead of H calls of K: 1.3x less
per decision), so a step costs imagination alone. If not even one step fits, it answers with the actor's
mode; a later round of the search runs only if it fits whole. All sampling noise is drawn up front, step by
step in the order a full rollout draws it, so a cut changes no step before it.

Cheap per decision: the stochastic state is one-hot, so every layer that reads it (the RSSM input layer,
the first layers of actor, reward, continue and critic heads) gathers and sums weight rows instead of
multiplying by mostly zeros (core/networks.py OneHotLinear, LoRA adapters included), and the ego vector is decoded for the chosen candidate only.
"""
import time

import torch
import torch.nn.functional as F

from adawm_planner.core.networks import OneHotLinear, OneHotMLP, TwoHot, gumbel, to_gumbel


def draw_noise(candidates, horizon, action_dim, rssm, discrete, generator):
    """Per step: the actor's noise (uniform for Gumbel-max, or normal), then the prior's uniforms, in the
    order and shapes world_model.imagine with actor.sample draws them. Returns the actor's (H, K, A) and
    the prior's (H, K, S, C) noise, uniforms turned into Gumbel noise."""
    prior_size = candidates * rssm.stoch * rssm.classes
    if discrete:  # one draw gives the same numbers as the per-step draws, in order
        actor, prior = gumbel((horizon, candidates * action_dim + prior_size), generator).split(
            [candidates * action_dim, prior_size], 1)
    else:
        actor, prior = [], []
        for _ in range(horizon):
            actor.append(torch.randn((candidates, action_dim), generator=generator))
            prior.append(torch.rand(prior_size, generator=generator))
        actor = torch.stack(actor)
        prior = to_gumbel(torch.stack(prior))
    return (actor.reshape(horizon, candidates, action_dim),
            prior.reshape(horizon, candidates, rssm.stoch, rssm.classes))


class Heads:
    """The one-hot fast paths of the actor, reward, continue and critic heads and the RSSM input layer,
    built once per decision and shared by every round of the search."""

    def __init__(self, world_model, actor_critic):
        rssm, actor = world_model.rssm, actor_critic.actor
        deter_dim, classes = rssm.deter, rssm.classes
        self.mlps = {name: OneHotMLP(mlp, deter_dim, classes) for name, mlp in (
            ('actor', actor.mlp), ('reward', world_model.reward_head), ('cont', world_model.cont_head),
            ('critic', actor_critic.critic))}
        self.img_in = OneHotLinear(rssm.img_in, 0, classes)


class Rollout:
    """Candidates imagined step by step from one latent state, with the sampling noise drawn up front:
    `noise` is (actor noise (H, K, A) or None, prior Gumbel noise (H, K, S, C)). With `actions` (H, K) the
    candidates take those action indices (open-loop, discrete actors) instead of sampling the actor."""

    def __init__(self, world_model, actor_critic, start, noise, heads=None, actions=None):
        rssm = world_model.rssm
        self.world_model, self.actor_critic, self.noise, self.actions = world_model, actor_critic, noise, actions
        self.heads = heads or Heads(world_model, actor_critic)
        candidates = noise[1].shape[1]
        self.offsets = torch.arange(rssm.stoch) * rssm.classes
        self.deter = start['deter'].expand(candidates, -1)
        self.columns = (start['stoch'].argmax(-1) + self.offsets).expand(candidates, -1)  # stoch as columns
        self.steps = {k: [] for k in ('actions', 'logp', 'deter', 'stoch')}
        self.policy = []   # discrete: per step, the actor's log-probabilities (K, A) (the search averages them)

    def step(self):
        """Imagine step t = len(done steps) for every candidate."""
        rssm, actor = self.world_model.rssm, self.actor_critic.actor
        t, columns, deter = len(self.steps['actions']), self.columns, self.deter
        params = actor.params(self.heads.mlps['actor'](columns, deter))
        if actor.discrete:
            if self.actions is None:
                index = (params + self.noise[0][t]).argmax(-1)
                index[0] = params[0].argmax()  # candidate 0 follows the actor's mode
                self.policy.append(params)
            else:
                index = self.actions[t]
            logp = params.gather(-1, index[:, None])[:, 0]
            action = index
            x = self.heads.img_in(torch.cat([columns, rssm.stoch * rssm.classes + index[:, None]], 1))
        else:
            mean, std = params
            action = (mean + std * self.noise[0][t]).clamp(-1, 1)
            action[0] = mean[0]
            logp = torch.distributions.Normal(mean, std).log_prob(action).sum(-1)
            x = self.heads.img_in(columns, after=action)
        self.deter = rssm.recurrent(x, deter)
        self.columns = (rssm.prior_logits(self.deter) + self.noise[1][t]).argmax(-1) + self.offsets
        for key, value in zip(self.steps, (action, logp, self.deter, self.columns)):
            self.steps[key].append(value)

    def result(self):
        """Per candidate: actions (K, h, A), actor log-likelihoods, rewards, continue probabilities (K, h),
        the critic's value at the last state (K,), the imagined deter (K, h, D) and stoch columns (K, h, S)."""
        out = {k: torch.stack(v, 1) for k, v in self.steps.items()}
        actor, wm = self.actor_critic.actor, self.world_model
        if actor.discrete:
            out['actions'] = F.one_hot(out['actions'], actor.action_dim).float()
        steps, candidates = len(self.steps['deter']), self.deter.shape[0]
        columns, deter = torch.cat(self.steps['stoch']), torch.cat(self.steps['deter'])   # step-major rows
        per_candidate = lambda x: x.view(steps, candidates).t()
        out['rewards'] = per_candidate(TwoHot(self.heads.mlps['reward'](columns, deter), wm.bins).mean())
        out['conts'] = per_candidate(torch.sigmoid(self.heads.mlps['cont'](columns, deter)[:, 0]))
        out['terminal_values'] = TwoHot(self.heads.mlps['critic'](self.columns, self.deter),
                                        self.actor_critic.bins).mean()
        return out


def score(traj, gamma, prior_weight):
    """Per candidate: discounted imagined rewards + the critic's value at the last state, each counted while
    the episode is still running, + prior_weight × the actions' mean actor log-likelihood."""
    reward, cont = traj['rewards'], traj['conts']
    steps = reward.shape[1]
    # The reward of step t counts if the episode was still running before it; the terminal value
    # counts only if it is still running after the last step.
    alive = torch.cumprod(torch.cat([torch.ones_like(cont[:, :1]), cont], 1), 1)
    discount = gamma ** torch.arange(steps, dtype=reward.dtype)
    return ((discount * alive[:, :-1] * reward).sum(1) + gamma ** steps * alive[:, -1] * traj['terminal_values']
            + prior_weight * traj['logp'].mean(1))


def refit(elite_actions, previous, mix):
    """Per-step categoricals (h, A): the elites' action frequencies (elite_actions (E, h) indices), with a
    `mix` share of the `previous` distribution kept."""
    frequencies = F.one_hot(elite_actions, previous.shape[-1]).to(previous.dtype).mean(0)
    return (1 - mix) * frequencies + mix * previous


class Pool:
    """The sequences rounds 2.. scored, all under the same prior draws: a sequence's score depends on its
    actions alone, so the best one found never gets worse."""

    def __init__(self):
        self.actions, self.scores, self.rewards, self.conts, self.values = [], [], [], [], []
        self.best_score, self.best_states = None, None

    def add(self, actions, traj, row_scores, particles):
        """actions (n, h) indices; traj and row_scores of n × particles rows, sequence-major."""
        per_sequence = lambda x: x.reshape(actions.shape[0], particles, *x.shape[1:]).mean(1)
        scores = per_sequence(row_scores)
        for store, value in ((self.actions, actions), (self.scores, scores),
                             (self.rewards, per_sequence(traj['rewards'])), (self.conts, per_sequence(traj['conts'])),
                             (self.values, per_sequence(traj['terminal_values']))):
            store.append(value)
        best = int(scores.argmax())
        if self.best_score is None or scores[best] > self.best_score:
            row = best * particles   # its first particle's imagined states, decoded for display
            self.best_score, self.best_states = scores[best], (traj['deter'][row], traj['stoch'][row])

    def elites(self, count):
        scores = torch.cat(self.scores)
        return torch.cat(self.actions)[scores.topk(min(count, len(scores))).indices]


@torch.inference_mode()
def plan(world_model, actor_critic, state, candidates, horizon, prior_weight, generator=None, deadline=None,
         step_estimate=None, score_estimate=None, search=None):
    """Plan from one filtered latent `state` (dict of (1, ...)): returns (first action (A,), info).

    search: the search knobs (core/config.py PlannerConfig: iterations, elites, particles, refit_mix), or
    None for one round. Round 1 samples the K candidates from the actor (candidate 0 its mode). With a
    discrete actor and iterations > 1, each later round imagines K / particles open-loop sequences under the
    same `particles` prior draws: in round 2 the actor's mode sequence and round 1's best `elites`, the rest
    drawn from per-step categoricals fitted to the best sequences so far (the first fit from round 1's
    elites and the actor's mean action probabilities); the answer is the best-scoring sequence of rounds
    2.. (score: the mean over the particles), or round 1's best if no later round finished.

    deadline: a time.perf_counter() value by which the answer is needed, or None (the full horizon and every
    round). Before each imagined step the planner checks that the step fits before it together with the
    scoring of every step taken by then (its rewards and continue flags, `score_estimate` seconds per step,
    e.g. the previous call's info['score_seconds'], else 0) and the rest of the scoring (the critic's value,
    the scores: less than a step). A step's expected time is the mean of the steps measured in this call, or
    `step_estimate` (seconds, e.g. the previous call's info['step_seconds']) before the first, else 0. (The
    mean, not the slowest: on shared cores one preempted step would otherwise stop planning for many
    decisions.) A step once started runs to its end, so a wrong estimate overshoots by about a step. A later
    round starts only if all its steps and the scoring fit, and one cut all the same is dropped: the answer
    is then what the finished rounds gave.

    info: 'horizon' (steps imagined: `horizon`, fewer if the deadline cut round 1, 0 on fallback),
    'evaluated' (candidates scored in round 1: `candidates`, or 0), 'iterations' (rounds finished),
    'fallback' (True: not one step fitted, the action is the actor's mode), 'seconds' (time spent),
    'step_seconds' (mean time of a step, None if none ran), 'score_seconds' (round 1's scoring per step
    taken, None if none ran), 'actions' (N, h, A) imagined actions (on
    fallback: the actor's mode as a (1, 1, A) plan), and unless on fallback 'rewards', 'conts' (N, h),
    'terminal_values', 'scores' (N,), 'best' (the chosen candidate's index) and 'ego' (h, E) its decoded ego
    vectors; N = K after one round, else the sequences rounds 2.. scored (means over the particles), and
    then 'refit' (h, A): the last fitted per-step action distribution. A plan cut at h steps in round 1 is
    the plan `horizon=h` gives."""
    started = time.perf_counter()
    rssm, actor = world_model.rssm, actor_critic.actor
    noise = draw_noise(candidates, horizon, actor.action_dim, rssm, actor.discrete, generator)
    iterations = search.iterations if search is not None and actor.discrete else 1
    if iterations > 1:   # drawn up front too, so a cut changes neither the rounds before it nor the generator
        particles = min(search.particles, candidates)
        sequences = candidates // particles
        prior_draws = gumbel((horizon, particles, rssm.stoch, rssm.classes), generator)
        action_noise = gumbel((iterations - 1, sequences, horizon, actor.action_dim), generator)
    rollout, stepping, timed = Rollout(world_model, actor_critic, state, noise), 0.0, 0

    def fits(steps, scored):   # `steps` more imagined steps, then scoring `scored` steps and the rest
        step = stepping / timed if timed else (step_estimate or 0.0)
        expected = (steps + 1) * step + scored * (score_estimate or 0.0)
        return deadline is None or time.perf_counter() + expected <= deadline

    def imagine(rollout, steps):
        nonlocal stepping, timed
        for _ in range(steps):
            if not fits(1, len(rollout.steps['actions']) + 1):
                return False
            step_started = time.perf_counter()
            rollout.step()
            stepping, timed = stepping + time.perf_counter() - step_started, timed + 1
        return True

    imagine(rollout, horizon)
    steps = len(rollout.steps['actions'])
    info = {'horizon': steps}
    if steps == 0:
        action = actor.mode(world_model.feat(state))[0]
        return action, {**info, 'step_seconds': None, 'score_seconds': None, 'evaluated': 0, 'iterations': 0,
                        'fallback': True, 'actions': action[None, None], 'best': 0,
                        'seconds': time.perf_counter() - started}
    gamma = actor_critic.preset.gamma
    scoring_started = time.perf_counter()
    traj = rollout.result()
    scores = score(traj, gamma, prior_weight)
    info['score_seconds'] = (time.perf_counter() - scoring_started) / steps
    info.update(evaluated=candidates, fallback=False, iterations=1, actions=traj['actions'], rewards=traj['rewards'],
                conts=traj['conts'], terminal_values=traj['terminal_values'], scores=scores, best=int(scores.argmax()))
    best_states = (traj['deter'][info['best']], traj['stoch'][info['best']])
    if iterations > 1:
        pool, round_actions = Pool(), traj['actions'].argmax(-1)   # (K, h) indices
        prior_noise = prior_draws[:steps].repeat(1, sequences, 1, 1)   # row = sequence × particles + particle
        elites = round_actions[scores.topk(min(search.elites, candidates)).indices]
        distribution = refit(elites, torch.stack(rollout.policy).exp().mean(1), search.refit_mix)
        carried = torch.cat([round_actions[:1], elites])[:sequences]   # the actor's mode sequence and round 1's elites
        for done in range(1, iterations):
            drawn = (distribution.log() + action_noise[done - 1, :, :steps]).argmax(-1)   # (sequences, h)
            sequence_actions = torch.cat([carried, drawn[len(carried):]]) if done == 1 else drawn
            if not fits(steps, steps):
                break
            later = Rollout(world_model, actor_critic, state, (None, prior_noise), rollout.heads,
                            sequence_actions.repeat_interleave(particles, 0).t())
            if not imagine(later, steps):
                break
            later_traj = later.result()
            pool.add(sequence_actions, later_traj, score(later_traj, gamma, prior_weight), particles)
            distribution = refit(pool.elites(search.elites), distribution, search.refit_mix)
            info['iterations'] = done + 1
        if pool.scores:
            scores = torch.cat(pool.scores)
            info.update(actions=F.one_hot(torch.cat(pool.actions), actor.action_dim).float(), scores=scores,
                        rewards=torch.cat(pool.rewards), conts=torch.cat(pool.conts),
                        terminal_values=torch.cat(pool.values), best=int(scores.argmax()), refit=distribution)
            best_states = pool.best_states
    deter, columns = best_states
    stoch = F.one_hot(columns - torch.arange(rssm.stoch) * rssm.classes, rssm.classes).float()
    info['ego'] = world_model.decode_ego(torch.cat([deter, stoch.flatten(-2)], -1))
    info.update(step_seconds=stepping / timed, seconds=time.perf_counter() - started)
    return info['actions'][info['best'], 0], info
