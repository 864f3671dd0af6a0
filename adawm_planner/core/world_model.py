"""DreamerV3-style recurrent state-space model (RSSM) over BEV + ego observations.

Latent state: deterministic GRU state `deter` (N, D) and categorical stochastic state `stoch` (N, S, C)
one-hot, with its `logits`. The feature the heads, the actor and the critic read is
concat(deter, flattened stoch).

Time convention (DreamerV3): step t holds the observation o_t, the action a_{t-1} that led to it, the
reward r_t received on arriving, `is_first` (o_t starts an episode) and `is_terminal` (o_t ends one).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from adawm_planner.core.networks import (
    MLP, ConvDecoder, ConvEncoder, OneHotLinear, OneHotMLP, TwoHot, categorical_kl, sample_index, sample_onehot,
    symexp, symlog, symlog_bins,
    unimix_logits)


class RSSM(nn.Module):
    """GRU written with nn.Linear (LoRA can target it; torch's GRUCell cannot be)."""

    def __init__(self, preset, embed_dim, action_dim):
        super().__init__()
        p = preset
        self.deter, self.stoch, self.classes, self.unimix = p.deter, p.stoch, p.classes, p.unimix
        self.img_in = nn.Linear(p.stoch * p.classes + action_dim, p.hidden)
        self.img_in_norm = nn.LayerNorm(p.hidden)
        self.gru = nn.Linear(p.hidden + p.deter, 3 * p.deter)
        self.gru_norm = nn.LayerNorm(3 * p.deter)
        self.img_out = nn.Linear(p.deter, p.hidden)
        self.img_out_norm = nn.LayerNorm(p.hidden)
        self.prior = nn.Linear(p.hidden, p.stoch * p.classes)
        self.obs_out = nn.Linear(p.deter + embed_dim, p.hidden)
        self.obs_out_norm = nn.LayerNorm(p.hidden)
        self.post = nn.Linear(p.hidden, p.stoch * p.classes)

    @property
    def feat_dim(self):
        return self.deter + self.stoch * self.classes

    def initial(self, batch, device=None):
        return {'deter': torch.zeros(batch, self.deter, device=device),
                'stoch': torch.zeros(batch, self.stoch, self.classes, device=device),
                'logits': torch.zeros(batch, self.stoch, self.classes, device=device)}

    def feat(self, state):
        return torch.cat([state['deter'], state['stoch'].flatten(-2)], -1)

    def _logits(self, raw):
        return unimix_logits(raw.reshape(*raw.shape[:-1], self.stoch, self.classes), self.unimix)

    def img_step(self, state, action, generator=None):
        """Prior step: (state_{t-1}, a_{t-1}) -> prior state_t."""
        deter = self.recurrent(self.img_in(torch.cat([state['stoch'].flatten(-2), action], -1)), state['deter'])
        logits = self.prior_logits(deter)
        return {'deter': deter, 'stoch': sample_onehot(logits, generator), 'logits': logits}

    def recurrent(self, x, deter):
        """GRU step: `x` is img_in's output for (stoch_{t-1}, a_{t-1}), `deter` is deter_{t-1}."""
        x = F.silu(self.img_in_norm(x))
        reset, cand, update = self.gru_norm(self.gru(torch.cat([x, deter], -1))).chunk(3, -1)
        reset = torch.sigmoid(reset)
        cand = torch.tanh(reset * cand)
        update = torch.sigmoid(update - 1)  # biased towards keeping the old state
        return update * cand + (1 - update) * deter

    def prior_logits(self, deter):
        return self._logits(self.prior(F.silu(self.img_out_norm(self.img_out(deter)))))

    def prior_head(self) -> list[nn.Module]:
        """The layers prior_logits reads after the GRU: what the model predicts the next latent to be."""
        return [self.img_out, self.img_out_norm, self.prior]

    def obs_step(self, prev_state, prev_action, embed, is_first, generator=None):
        """Posterior step; resets state and action where `is_first` is set (None: no row starts an
        episode, nothing to reset). Returns (post, prior)."""
        if is_first is not None:
            keep = (~is_first).float()[:, None]
            prev_state = {k: v * keep.reshape(-1, *[1] * (v.dim() - 1)) for k, v in prev_state.items()}
            prev_action = prev_action * keep
        prior = self.img_step(prev_state, prev_action, generator)
        x = F.silu(self.obs_out_norm(self.obs_out(torch.cat([prior['deter'], embed], -1))))
        logits = self._logits(self.post(x))
        post = {'deter': prior['deter'], 'stoch': sample_onehot(logits, generator), 'logits': logits}
        return post, prior


class WorldModel(nn.Module):
    def __init__(self, preset, bev_shape, ego_dim, action_dim):
        super().__init__()
        p = preset
        self.preset, self.bev_shape, self.ego_dim, self.action_dim = p, tuple(bev_shape), ego_dim, action_dim
        self.bev_encoder = ConvEncoder(bev_shape, p.cnn_depth)
        self.ego_encoder = MLP(ego_dim, p.units, 1, p.units)
        embed_dim = self.bev_encoder.out_dim + p.units
        self.rssm = RSSM(p, embed_dim, action_dim)
        feat = self.rssm.feat_dim
        self.bev_decoder = ConvDecoder(feat, bev_shape, p.cnn_depth)
        self.ego_decoder = MLP(feat, p.units, p.layers, ego_dim)
        self.reward_head = MLP(feat, p.units, p.layers, p.bins)
        self.cont_head = MLP(feat, p.units, p.layers, 1)
        # Zero-initialised output layers: predicted reward starts at 0 instead of a random value.
        nn.init.zeros_(self.reward_head.out.weight)
        nn.init.zeros_(self.reward_head.out.bias)
        self.register_buffer('bins', symlog_bins(p.bins), persistent=False)

    @property
    def feat_dim(self):
        return self.rssm.feat_dim

    def initial(self, batch, device=None):
        return self.rssm.initial(batch, device)

    def feat(self, state):
        return self.rssm.feat(state)

    def decode_ego(self, feat):
        return symexp(self.ego_decoder(feat))

    def embed(self, bev, ego):
        return torch.cat([self.bev_encoder(bev), self.ego_encoder(symlog(ego))], -1)

    def observe(self, bev, ego, action, is_first, state=None, generator=None, embed=None):
        """Filter a batch of sequences (B, T, ...). Returns posts, priors as dicts of (B, T, ...).
        `embed`: the frames' embed(bev, ego) if already known (a frozen encoder's cache, core/replay.py)."""
        embed = self.embed(bev, ego) if embed is None else embed
        batch, length = is_first.shape
        state = self.initial(batch, embed.device) if state is None else state
        posts, priors = [], []
        resets = is_first.any(0).tolist()  # steps where some sequence starts an episode
        for t in range(length):
            first = is_first[:, t] if resets[t] else None
            state, prior = self.rssm.obs_step(state, action[:, t], embed[:, t], first, generator)
            posts.append(state)
            priors.append(prior)
        stack = lambda states: {k: torch.stack([s[k] for s in states], 1) for k in states[0]}
        return stack(posts), stack(priors)

    @torch.inference_mode()
    def obs_step(self, state, prev_action, obs, is_first, generator=None):
        """One online filter step for a single observation (batch 1). `obs` = {'bev', 'ego'} numpy/tensors."""
        bev = torch.as_tensor(obs['bev'])[None]
        ego = torch.as_tensor(obs['ego'], dtype=torch.float32)[None]
        state = self.initial(1) if state is None else state
        first = torch.tensor([bool(is_first)])
        post, _ = self.rssm.obs_step(state, prev_action.reshape(1, -1), self.embed(bev, ego), first, generator)
        return post

    def imagine(self, start, policy_or_actions, horizon, generator=None):
        """Roll the prior forward from `start` (dict of (N, ...)).

        `policy_or_actions` is either a callable feat -> action (N, A) or actions (N, horizon, A).
        Returns feats (N, H+1, F) including the start, actions (N, H, A), predicted rewards and
        continue probabilities (N, H) of the imagined states 1..H, and the states themselves."""
        state, feats, actions, states = start, [self.feat(start)], [], [start]
        for t in range(horizon):
            if callable(policy_or_actions):
                action = policy_or_actions(feats[-1])
            else:
                action = policy_or_actions[:, t]
            state = self.rssm.img_step(state, action, generator)
            actions.append(action)
            states.append(state)
            feats.append(self.feat(state))
        feats = torch.stack(feats, 1)
        # the heads read states 1..H as one contiguous block: on the sliced 3-D view a linear layer
        # broadcasts its weight into a batched matmul, ~2x slower
        later = feats[:, 1:].contiguous()
        return {'feat': feats, 'action': torch.stack(actions, 1),
                'reward': TwoHot(self.reward_head(later), self.bins).mean(),
                'cont': torch.sigmoid(self.cont_head(later)[..., 0]),
                'deter': torch.stack([s['deter'] for s in states], 1)}

    @torch.no_grad()
    def imagine_actor(self, start, actor, horizon, generator=None):
        """imagine(start, actor's samples, horizon) for a discrete actor, computed on the latents' one-hot
        columns: the layers reading (stoch, action) — the RSSM input, the actor's and the heads' first
        layers — gather weight rows instead of multiplying mostly zeros. The same draws in the same order,
        so the same trajectory. Also returns 'columns' (N, H+1, S): each state's stoch as column indices
        (for OneHotMLP)."""
        rssm = self.rssm
        img_in, policy = OneHotLinear(rssm.img_in, 0, rssm.classes), OneHotMLP(actor.mlp, rssm.deter, rssm.classes)
        offsets = torch.arange(rssm.stoch) * rssm.classes
        deter, columns = start['deter'], start['stoch'].argmax(-1) + offsets
        all_deter, all_columns, actions = [deter], [columns], []
        for _ in range(horizon):
            index = sample_index(actor.params(policy(columns, deter)), generator)
            actions.append(index)
            deter = rssm.recurrent(img_in(torch.cat([columns, rssm.stoch * rssm.classes + index[:, None]], 1)), deter)
            columns = sample_index(rssm.prior_logits(deter), generator) + offsets
            all_deter.append(deter)
            all_columns.append(columns)
        deter, columns = torch.stack(all_deter, 1), torch.stack(all_columns, 1)
        stoch = F.one_hot(columns - offsets, rssm.classes).float()
        later_columns, later_deter = columns[:, 1:].flatten(0, 1), deter[:, 1:].flatten(0, 1)
        heads = lambda mlp: OneHotMLP(mlp, rssm.deter, rssm.classes)(later_columns, later_deter)
        shape = columns.shape[0], horizon
        return {'feat': torch.cat([deter, stoch.flatten(-2)], -1),
                'action': F.one_hot(torch.stack(actions, 1), actor.action_dim).float(),
                'reward': TwoHot(heads(self.reward_head), self.bins).mean().view(shape),
                'cont': torch.sigmoid(heads(self.cont_head)[:, 0]).view(shape),
                'deter': deter, 'columns': columns}

    def loss(self, batch):
        loss, metrics, _ = self.loss_and_posts(batch)
        return loss, metrics

    def prior_loss(self, posts):
        """The one term of loss() that reaches the prior head (img_out, prior): the dynamics KL with its free
        nats, scaled. Priors are recomputed from the posts' deter, so the filter can run without gradients.
        With adapters on the prior head alone (core/adaptation.py) its gradients are the full loss's."""
        p = self.preset
        dyn = categorical_kl(posts['logits'].detach(), self.rssm.prior_logits(posts['deter'].detach()))
        loss = p.dyn_scale * torch.clamp(dyn, min=p.free_nats).mean()
        return loss, {'prior_loss': loss.item(), 'kl_dyn': dyn.mean().item()}

    def loss_and_posts(self, batch):
        """DreamerV3 world-model loss on a batch of sequences; also returns the posteriors."""
        p = self.preset
        posts, priors = self.observe(batch['bev'], batch['ego'], batch['action'], batch['is_first'])
        feat = self.feat(posts)
        bev_target = batch['bev'].to(torch.float32, copy=True).div_(255.0)
        bev_loss = F.mse_loss(self.bev_decoder(feat), bev_target, reduction='none').sum((-3, -2, -1))
        ego_loss = (self.ego_decoder(feat) - symlog(batch['ego'])).square().sum(-1)
        reward_loss = -TwoHot(self.reward_head(feat), self.bins).log_prob(batch['reward'])
        cont_target = 1.0 - batch['is_terminal'].float()
        cont_loss = F.binary_cross_entropy_with_logits(self.cont_head(feat)[..., 0], cont_target,
                                                       reduction='none')
        if p.terminal_weight != 1.0:
            weight = 1.0 + (p.terminal_weight - 1.0) * batch['is_terminal'].float()
            reward_loss, cont_loss = reward_loss * weight, cont_loss * weight
        detach = lambda s: {k: v.detach() for k, v in s.items()}
        dyn = categorical_kl(detach(posts)['logits'], priors['logits'])
        rep = categorical_kl(posts['logits'], detach(priors)['logits'])
        # Free nats: no pressure on the KL below 1 nat, so the latent keeps information.
        dyn_loss = torch.clamp(dyn, min=p.free_nats)
        rep_loss = torch.clamp(rep, min=p.free_nats)
        total = (p.bev_scale * bev_loss + p.ego_scale * ego_loss + p.reward_scale * reward_loss
                 + p.cont_scale * cont_loss + p.dyn_scale * dyn_loss + p.rep_scale * rep_loss).mean()
        metrics = {'model_loss': total.item(), 'bev_loss': bev_loss.mean().item(),
                   'ego_loss': ego_loss.mean().item(), 'reward_loss': reward_loss.mean().item(),
                   'cont_loss': cont_loss.mean().item(), 'kl_dyn': dyn.mean().item(),
                   'kl_rep': rep.mean().item()}
        return total, metrics, posts
