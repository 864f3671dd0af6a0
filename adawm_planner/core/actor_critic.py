"""Actor and critic trained on imagined rollouts of the world model (DreamerV3 recipe):
λ-returns, return normalisation by the 5th-95th percentile range, a slow (EMA) critic the critic is
regularised towards, entropy regularisation, REINFORCE gradients for the actor.

Actions: discrete (CarDreamer's 15 = 3 accelerations × 5 steers, one-hot to the world model) or
continuous (acceleration, steering in [-1, 1]).
"""
import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from adawm_planner.core.networks import MLP, OneHotMLP, TwoHot, sample_index, symlog_bins, unimix_logits


class Actor(nn.Module):
    def __init__(self, preset, feat_dim, action_dim, discrete):
        super().__init__()
        self.discrete, self.action_dim, self.unimix = discrete, action_dim, preset.unimix
        self.mlp = MLP(feat_dim, preset.units, preset.layers, action_dim if discrete else 2 * action_dim)

    def forward(self, feat):
        """Distribution parameters: log-probabilities (discrete) or (mean, std) (continuous)."""
        return self.params(self.mlp(feat))

    def params(self, out):
        """Distribution parameters from the MLP's output."""
        if self.discrete:
            return unimix_logits(out, self.unimix)
        mean, std = out.chunk(2, -1)
        return torch.tanh(mean), 0.1 + 0.9 * torch.sigmoid(std + 2.0)

    def sample(self, feat, generator=None, greedy=None):
        """Sample actions and their log-likelihood; rows where `greedy` (bool (N,)) is set take the mode."""
        if self.discrete:
            logp = self(feat)
            index = sample_index(logp, generator)
            if greedy is not None:
                index = torch.where(greedy, logp.argmax(-1), index)
            return F.one_hot(index, self.action_dim).float(), logp.gather(-1, index[..., None])[..., 0]
        mean, std = self(feat)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device)
        action = (mean + std * noise).clamp(-1, 1)
        if greedy is not None:
            action = torch.where(greedy[:, None], mean, action)
        return action, torch.distributions.Normal(mean, std).log_prob(action).sum(-1)

    def mode(self, feat):
        if self.discrete:
            return F.one_hot(self(feat).argmax(-1), self.action_dim).float()
        return self(feat)[0]

    def log_prob_entropy(self, out, action):
        """Log-likelihood of `action` and the entropy, from the MLP's output `out` (self.mlp(feat))."""
        if self.discrete:
            logp = self.params(out)
            return (logp * action).sum(-1), -(logp.exp() * logp).sum(-1)
        dist = torch.distributions.Normal(*self.params(out))
        return dist.log_prob(action).sum(-1), dist.entropy().sum(-1)


class ActorCritic(nn.Module):
    def __init__(self, preset, feat_dim, action_dim, discrete=True):
        super().__init__()
        self.preset = preset
        self.actor = Actor(preset, feat_dim, action_dim, discrete)
        self.critic = MLP(feat_dim, preset.units, preset.layers, preset.bins)
        nn.init.zeros_(self.critic.out.weight)
        nn.init.zeros_(self.critic.out.bias)
        self.slow_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.register_buffer('bins', symlog_bins(preset.bins), persistent=False)
        self.register_buffer('return_lo', torch.zeros(()))
        self.register_buffer('return_hi', torch.zeros(()))

    def lambda_returns(self, reward, cont, value):
        """reward, cont: (N, H) for imagined states 1..H; value: (N, H+1). Returns (N, H) for states 0..H-1."""
        p = self.preset
        ret, returns = value[:, -1], []
        for t in reversed(range(reward.shape[1])):
            ret = reward[:, t] + p.gamma * cont[:, t] * ((1 - p.lam) * value[:, t + 1] + p.lam * ret)
            returns.append(ret)
        return torch.stack(returns[::-1], 1)

    def loss(self, world_model, start, start_cont, generator=None):
        """Imagine `horizon` steps from the posterior states `start` (dict of (N, ...)) and return
        (actor_loss, critic_loss, metrics)."""
        p = self.preset
        with torch.no_grad():
            if self.actor.discrete:
                traj = world_model.imagine_actor(start, self.actor, p.horizon, generator)
            else:
                traj = world_model.imagine(start, lambda f: self.actor.sample(f, generator)[0], p.horizon, generator)
            cont = torch.cat([start_cont[:, None], traj['cont']], 1)
            weight = torch.cumprod(cont, 1)[:, :-1]  # weight of imagined state t: it is still alive
        def run(mlp, steps):
            # states as one 2-D block: on a sliced 3-D input linear layers broadcast into batched matmuls
            feat = lambda: traj['feat'][:, steps].flatten(0, 1)
            first = mlp.net[0] if len(mlp.net) else mlp.out
            if 'columns' in traj and not getattr(first, 'base_layer', first).weight.requires_grad:
                # a frozen first layer (LoRA finetuning, the slow critic) on one-hot latents gathers weight
                # rows. Its LoRA adapters are gathered too where no gradient flows; under gradients they
                # multiply the dense input (embedding_bag's backward measured slower). A trained first layer
                # stays a matmul: gathering measured slower there (271 vs 266 ms per loss). A LoRA policy
                # update this way: ≈ 9 % less than all-dense (interleaved A/B, 370 vs 406 ms, BENCHMARKS.md)
                rssm, grad = world_model.rssm, torch.is_grad_enabled()
                return OneHotMLP(mlp, rssm.deter, rssm.classes, adapters_on_input=grad)(
                    traj['columns'][:, steps].flatten(0, 1), traj['deter'][:, steps].flatten(0, 1),
                    feat() if grad else None)
            return mlp(feat())
        now, every = slice(0, -1), slice(None)   # states 0..H-1, and 0..H
        # One critic pass over all H+1 states: its detached values give the returns and the baseline,
        # its logits of states 0..H-1 the critic loss.
        critic_logits = run(self.critic, every).view(*cont.shape, -1)
        with torch.no_grad():
            value = TwoHot(critic_logits.detach(), self.bins).mean()
            returns = self.lambda_returns(traj['reward'], traj['cont'], value)
            self._update_return_range(returns)
            scale = torch.clamp(self.return_hi - self.return_lo, min=1.0)
            advantage = (returns - value[:, :-1]) / scale
            slow_target = TwoHot(run(self.slow_critic, now), self.bins).mean().view(weight.shape)

        logp, entropy = (x.view(weight.shape) for x in self.actor.log_prob_entropy(
            run(self.actor.mlp, now), traj['action'].flatten(0, 1)))
        actor_loss = (weight * -(logp * advantage + p.entropy * entropy)).mean()
        critic_dist = TwoHot(critic_logits[:, :-1], self.bins)
        critic_loss = (weight * -(critic_dist.log_prob(returns) + critic_dist.log_prob(slow_target))).mean()
        metrics = {'actor_loss': actor_loss.item(), 'critic_loss': critic_loss.item(),
                   'entropy': entropy.mean().item(), 'imag_return': returns.mean().item(),
                   'imag_reward': traj['reward'].mean().item(), 'return_scale': scale.item()}
        return actor_loss, critic_loss, metrics

    def _update_return_range(self, returns):
        decay = self.preset.return_decay
        lo, hi = torch.quantile(returns.flatten(), torch.tensor([0.05, 0.95]))
        self.return_lo.mul_(decay).add_((1 - decay) * lo)
        self.return_hi.mul_(decay).add_((1 - decay) * hi)

    @torch.no_grad()
    def update_slow_critic(self):
        decay = self.preset.slow_critic_decay
        for slow, fast in zip(self.slow_critic.parameters(), self.critic.parameters()):
            if fast.requires_grad:   # under LoRA finetuning the frozen base stays bit-identical
                slow.mul_(decay).add_((1 - decay) * fast)
