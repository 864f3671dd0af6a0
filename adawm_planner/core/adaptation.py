"""Alignment-driven finetuning (AdaWM) and its baselines: one loop, one budget, seven strategies.

Each finetuning step measures the model mismatch ε_P and the policy mismatch ε_π on the latest window of
new-task data (core/mismatch.py) and updates one side:

  adawm      the world model if ε_P > C · ε_π, else the policy            (LoRA on both, one trained per step)
  model      always the world model                                      (LoRA on the world model)
  policy     always the actor-critic                                     (LoRA on actor and critic)
  alternate  world model and actor-critic in turn                        (LoRA on both)
  full       every weight of both, each step (DreamerV3-standard finetuning; no LoRA)
  none       nothing; the pretrained agent keeps driving                 (mismatch still measured)
  oracle     the side known to be wrong on a known-answer pair (config.known_side: model, policy, or
             both = in turn); the upper reference for any decision rule    (LoRA on the side(s) it trains)

All strategies see the same environment steps and the same number of finetuning steps. The world model's
LoRA adapters sit on its prior head only (img_out and prior: what it predicts the next latent to be), and
on every linear layer of actor, critic and slow critic for the policy; the frozen pretrained base is never
modified. Why the prior head only: the actor reads the filtered state [h_t, z_t], which the GRU, the
posterior and the encoders compute. Adapting those moves every state the pretrained actor sees, and on the
lag task 70 such model-only updates took success from 0.40 to 0.00 (off route every episode), GRU-only
included; with the prior head alone it stayed at 0.40. A model step then repairs what imagination predicts
without touching what the actor sees in the real world, and the policy steps learn in the repaired
imagination.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn as nn

from adawm_planner.core import lora, mismatch
from adawm_planner.core.config import FinetuneConfig
from adawm_planner.core.learner import load_optimizer_tensors, optimizer_tensors
from adawm_planner.core.memory import retain_freed_memory

MODEL_LORA_PREFIXES = ('rssm.img_out', 'rssm.prior')
POLICY_LORA_PREFIXES = ('actor.', 'critic.', 'slow_critic.')


def linear_names(module: nn.Module, prefixes: tuple[str, ...]) -> list[str]:
    return [name for name, m in module.named_modules() if isinstance(m, nn.Linear) and name.startswith(prefixes)]


class Finetuner:
    """Holds the agent being finetuned, a frozen copy of the pretrained agent, the adapters and optimisers."""

    def __init__(self, agent, config: FinetuneConfig, pretrain_summary: dict | None = None,
                 reference: mismatch.Reference | None = None, driving_mode: str = 'actor'):
        """`reference`: the checkpoint's mismatch reference (mismatch.load_reference); with it ε_P and ε_π
        are the calibrated estimates the rule is meant to use, without it the uncalibrated TVs.
        `driving_mode`: how the new-task data is driven ('sample' in the finetuning runs, the planner's mode
        live), whose pretraining-task failure rate the episode-level ε_π compares against."""
        if not agent.discrete:
            raise ValueError('adaptation needs the discrete action set: ε_π is an exact TV over actions')
        retain_freed_memory()  # a step's large tensors reuse faulted-in pages
        self.agent, self.config, self.summary, self.reference = agent, config, pretrain_summary, reference
        self.driving_mode = driving_mode
        if config.policy_signal == 'improvement' and (reference is None or 'improvement' not in reference.cdf):
            raise ValueError("policy_signal 'improvement' needs a mismatch reference with that signal "
                             '(python -m adawm_planner.experiments.mismatch_reference CHECKPOINT --extend)')
        if config.policy_signal == 'failures' and (reference is None or not reference.failures):
            raise ValueError("policy_signal 'failures' needs a mismatch reference with the pretrained agent's "
                             'episode outcomes (python -m adawm_planner.experiments.mismatch_reference CHECKPOINT)')
        self.pretrained = copy.deepcopy(agent).requires_grad_(False).eval()
        self.steps = 0
        wm, ac = agent.world_model, agent.actor_critic
        # checksums of the frozen bases, before adapters are injected: what exported adapters are tied to
        self.base_checksum = {'model': lora.base_checksum(wm), 'policy': lora.base_checksum(ac)}
        # the layers adapters go on, named in the plain modules (before peft wraps them)
        self.lora_targets = {'model': linear_names(wm, MODEL_LORA_PREFIXES),
                             'policy': linear_names(ac, POLICY_LORA_PREFIXES)}
        s = config.strategy
        if s == 'full':
            model_params, actor_params, critic_params = (list(wm.parameters()), list(ac.actor.parameters()),
                                                         list(ac.critic.parameters()))
            model_lr, policy_lr = agent.preset.model_lr, agent.preset.actor_lr
        else:
            agent.requires_grad_(False)
            side = config.known_side if s == 'oracle' else None
            if s in ('adawm', 'model', 'alternate') or side in ('model', 'both'):
                lora.attach(wm, 'model', config.rank, config.alpha, self.lora_targets['model'])
            if s in ('adawm', 'policy', 'alternate') or side in ('policy', 'both'):
                lora.attach(ac, 'policy', config.rank, config.alpha, self.lora_targets['policy'])
            trainable = lambda m: [p for p in m.parameters() if p.requires_grad]
            model_params, actor_params, critic_params = (trainable(wm), trainable(ac.actor),
                                                         trainable(ac.critic))
            model_lr, policy_lr = config.model_lr, config.policy_lr
        self.model_opt = torch.optim.Adam(model_params, model_lr) if model_params else None
        prior_head = {id(p) for m in wm.rssm.prior_head() for p in m.parameters()}
        self.prior_head_only = bool(model_params) and all(id(p) in prior_head for p in model_params)
        # what the filter computes (encoders, GRU, posterior) is untouched unless the model trains beyond its
        # prior head: the posteriors then equal the pretrained copy's, same noise, same numbers
        self.filter_unchanged = not model_params or self.prior_head_only
        self.policy_opt = (torch.optim.Adam(actor_params + critic_params, policy_lr)
                           if actor_params or critic_params else None)

    def attach(self, replay) -> None:
        """Let `replay` keep each frame's embedding while the encoders stay frozen (every LoRA strategy):
        batches then skip the encoder, with the same numbers."""
        wm = self.agent.world_model
        if not any(p.requires_grad for m in (wm.bev_encoder, wm.ego_encoder) for p in m.parameters()):
            replay.cache_embeddings(torch.no_grad()(lambda bev, ego: wm.embed(torch.from_numpy(bev),
                                                                           torch.from_numpy(ego))))

    @classmethod
    def from_checkpoint(cls, agent, config: FinetuneConfig, checkpoint_dir, driving_mode: str = 'actor') -> 'Finetuner':
        """A Finetuner with what the checkpoint ships for it, each where present: the pretraining replay
        summary (visitation TV) and the mismatch reference (the calibrated ε_P and ε_π the rule uses)."""
        from adawm_planner.core.checkpoint import CheckpointError, load_replay_summary

        def optional(load):
            try:
                return load(checkpoint_dir)
            except CheckpointError:
                return None
        return cls(agent, config, optional(load_replay_summary), optional(mismatch.load_reference), driving_mode)

    # ---- mismatch -----------------------------------------------------------------------------------
    @torch.no_grad()
    def measure(self, window: dict) -> dict:
        """ε_P, ε_π (mean and max over states) and the visitation TV on a window (batch of sequences); with a
        reference also ε_π's episode-level part from window['failures'] (0/1 per latest finished episode,
        where the caller knows outcomes)."""
        # Both agents filter with the same sampling noise, so identical weights give identical latents
        # and ε_π is exactly 0 before any update.
        noise = lambda: torch.Generator().manual_seed(self.steps)
        posts, priors = self.agent.world_model.observe(window['bev'], window['ego'], window['action'],
                                                       window['is_first'], generator=noise(),
                                                       embed=window.get('embed'))
        eps_model = mismatch.prior_posterior_tv(priors['logits'].exp(), posts['logits'].exp())
        current = self.agent.actor_critic.actor(self.agent.world_model.feat(posts)).exp().flatten(0, 1)
        if self.filter_unchanged:   # the pretrained copy filters exactly as the agent does
            ref_posts = posts
        else:
            ref_posts, _ = self.pretrained.world_model.observe(window['bev'], window['ego'], window['action'],
                                                               window['is_first'], generator=noise())
        reference = self.pretrained.actor_critic.actor(self.pretrained.world_model.feat(ref_posts)).exp()
        eps_policy, eps_policy_max = mismatch.policy_tv(current, reference.flatten(0, 1))
        result = {'eps_model': eps_model.item(), 'eps_policy': eps_policy.item(),
                  'eps_policy_max': eps_policy_max.item()}
        if self.reference is not None:
            # the calibrated pair drives the rule; the uncalibrated TVs stay in the trace for comparison
            result['tv_prior_posterior'], result['tv_policy'] = result['eps_model'], result['eps_policy']
            surprise = mismatch.model_scores(self.agent.world_model, posts, window['action'], window['is_first'],
                                             self.reference.horizon, generator=noise())
            result['eps_model'] = self.reference.estimate('model', surprise)
            shortfall = self.reference.estimate('reward', mismatch.reward_scores(window['reward'], window['is_first']))
            result['eps_policy_episodes'] = self.reference.estimate_failures(window.get('failures', ()),
                                                                             self.driving_mode)
            if self.config.policy_signal == 'failures':
                result['eps_policy'] = result['eps_policy_episodes']
                result['eps_policy_reward'] = shortfall
            elif self.config.policy_signal == 'improvement':
                states = {k: posts[k].flatten(0, 1)[::mismatch.IMPROVEMENT_STRIDE] for k in ('deter', 'stoch')}
                gains = mismatch.improvement_scores(self.agent.world_model, self.agent.actor_critic, states,
                                                    self.agent.preset.horizon, self.agent.preset.gamma,
                                                    generator=noise())
                result['eps_policy'] = self.reference.estimate('improvement', gains)
                result['eps_policy_reward'] = shortfall
            else:
                result['eps_policy'] = shortfall
        if self.summary is not None:
            codes = ref_posts['logits'].argmax(-1).flatten(0, 1)
            actions = window['action'].argmax(-1).flatten()
            p = self.agent.preset
            result['visitation_tv'] = mismatch.visitation_tv(
                codes, actions, self.summary['codes'].flatten(0, 1).long(),
                self.summary['action'].flatten().long(), p.classes, self.agent.action_dim).item()
        return result

    def choose(self, measured: dict) -> str | None:
        s = self.config.strategy
        if s == 'adawm':
            return mismatch.decide(measured['eps_model'], measured['eps_policy'], self.config.threshold_c,
                                   measured.get('eps_policy_episodes', 0.0))
        if s == 'alternate' or (s == 'oracle' and self.config.known_side == 'both'):
            return (mismatch.UPDATE_MODEL, mismatch.UPDATE_POLICY)[self.steps % 2]
        if s == 'oracle':
            return self.config.known_side
        return {'model': mismatch.UPDATE_MODEL, 'policy': mismatch.UPDATE_POLICY, 'full': 'both',
                'none': None}[s]

    # ---- updates ------------------------------------------------------------------------------------
    def update_model(self, batch: dict) -> dict:
        wm = self.agent.world_model
        if self.prior_head_only:
            # Only the dynamics KL reaches the prior head: filter without gradients and skip the decoders
            # (same gradients as the full loss; test_adaptation checks it).
            with torch.no_grad():
                posts, _ = wm.observe(batch['bev'], batch['ego'], batch['action'], batch['is_first'],
                                      embed=batch.get('embed'))
            loss, metrics = wm.prior_loss(posts)
        else:
            loss, metrics, _ = wm.loss_and_posts(batch)
        self._step(self.model_opt, loss)
        return metrics

    def update_policy(self, batch: dict) -> dict:
        wm, ac = self.agent.world_model, self.agent.actor_critic
        with torch.no_grad():
            posts, _ = wm.observe(batch['bev'], batch['ego'], batch['action'], batch['is_first'],
                                  embed=batch.get('embed'))
        start = {k: v.flatten(0, 1) for k, v in posts.items()}
        start_cont = 1.0 - batch['is_terminal'].float().flatten()
        actor_loss, critic_loss, metrics = ac.loss(wm, start, start_cont, self.agent.generator)
        self._step(self.policy_opt, actor_loss + critic_loss)
        ac.update_slow_critic()
        return metrics

    def step(self, batch: dict, window: dict) -> dict:
        """One finetuning step: measure, decide, update the chosen side. Returns everything measured."""
        measured = self.measure(window)
        decision = self.choose(measured)
        metrics = {}
        if decision in (mismatch.UPDATE_MODEL, 'both'):
            metrics.update(self.update_model(batch))
        if decision in (mismatch.UPDATE_POLICY, 'both'):
            metrics.update(self.update_policy(batch))
        self.steps += 1
        return {**measured, 'decision': decision or 'none', **metrics}

    def _step(self, optimizer, loss):
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for group in optimizer.param_groups for p in group['params']]
        torch.nn.utils.clip_grad_norm_(params, self.agent.preset.grad_clip)
        optimizer.step()

    # ---- resuming -----------------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """What a resumed run needs, as flat tensors (safetensors): the agent's weights with their adapters
        (the whole agent: under `full` every weight moves, and it is only a few MB), the optimisers' moments,
        the sampling generator and the step count."""
        tensors = {f'agent/{k}': v.detach().contiguous() for k, v in self.agent.state_dict().items()}
        tensors.update(optimizer_tensors(self._optimizers()))
        tensors['generator'] = self.agent.generator.get_state()
        tensors['steps'] = torch.tensor(self.steps)
        return tensors

    def _optimizers(self) -> dict:
        return {name: opt for name, opt in (('model_opt', self.model_opt), ('policy_opt', self.policy_opt))
                if opt is not None}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Inverse of state_tensors, onto a Finetuner built with the same checkpoint and config."""
        self.agent.load_state_dict({k[len('agent/'):]: v for k, v in tensors.items() if k.startswith('agent/')})
        load_optimizer_tensors(self._optimizers(), tensors)
        self.agent.generator.set_state(tensors['generator'])
        self.steps = int(tensors['steps'])

    # ---- adapters -----------------------------------------------------------------------------------
    def export_adapter(self, target: str, version: int) -> lora.Adapter:
        module = self.agent.module(target)
        meta = lora.AdapterMeta(target=target, version=version, rank=self.config.rank, alpha=self.config.alpha,
                                target_modules=tuple(self.lora_targets[target]),
                                base_checksum=self.base_checksum[target])
        return lora.export(module, meta)

    def save_adapters(self, directory) -> dict:
        """Every side that carries LoRA layers, exported (version 1) to DIRECTORY/<side>_adapter.safetensors
        with its JSON sidecar; returns side -> {path, sha256, bytes}."""
        saved = {}
        for target in lora.TARGETS:
            if any('.lora_' in name for name, _ in self.agent.module(target).named_parameters()):
                adapter = self.export_adapter(target, version=1)
                path = lora.save(adapter, Path(directory) / f'{target}_adapter')
                saved[target] = {'path': path.name, 'sha256': adapter.sha256, 'bytes': len(adapter.blob)}
        return saved

    def trainable_report(self) -> dict:
        """Trainable parameters per side, and as a fraction of that side's base parameters."""
        report = {}
        for side in lora.TARGETS:
            count, fraction = lora.trainable_fraction(self.agent.module(side))
            report[side] = {'trainable': count, 'fraction': fraction}
        return report

