"""One DreamerV3 update: the world model on a replayed batch, then the actor-critic on imagined rollouts from
its posteriors, each with its own Adam optimiser and gradient clipping."""
import torch

from adawm_planner.core.memory import retain_freed_memory


class Learner:
    """Optimisers and one update of world model + actor-critic.

    `behaviour_cloning` > 0 (learning from recorded drives, where nothing corrects the actor by acting) adds
    that weight times the negative log-likelihood of the recorded actions, at the states they were taken
    in, to the actor loss: an actor trained in imagination alone picks the actions the model has seen least,
    whose outcomes it gets most wrong (measured: a dataset-pretrained actor braked at every step, the
    action of 2.3 % of the data; BENCHMARKS.md "Pretraining from recorded drives")."""

    def __init__(self, agent, behaviour_cloning: float = 0.0):
        p = agent.preset
        retain_freed_memory()  # a step's large tensors reuse faulted-in pages (1.6x faster updates)
        self.agent, self.behaviour_cloning = agent, behaviour_cloning
        ac = agent.actor_critic
        self.model_opt = torch.optim.Adam(agent.world_model.parameters(), p.model_lr, eps=1e-8)
        self.actor_opt = torch.optim.Adam(ac.actor.parameters(), p.actor_lr, eps=1e-5)
        self.critic_opt = torch.optim.Adam(ac.critic.parameters(), p.critic_lr, eps=1e-5)

    def update(self, batch):
        wm, ac = self.agent.world_model, self.agent.actor_critic
        model_loss, metrics, posts = wm.loss_and_posts(batch)
        self._step(self.model_opt, model_loss, wm.parameters())
        start = {k: v.detach().flatten(0, 1) for k, v in posts.items()}
        start_cont = 1.0 - batch['is_terminal'].float().flatten()
        actor_loss, critic_loss, ac_metrics = ac.loss(wm, start, start_cont, self.agent.generator)
        if self.behaviour_cloning > 0:
            # step t holds the action that led to it: the state at t-1 chose batch['action'][:, t]
            feat = wm.feat({k: v[:, :-1] for k, v in posts.items()}).detach()
            taken = ~batch['is_first'][:, 1:]
            logp, _ = ac.actor.log_prob_entropy(ac.actor.mlp(feat[taken]), batch['action'][:, 1:][taken])
            ac_metrics['behaviour_nll'] = -logp.mean().item()
            actor_loss = actor_loss - self.behaviour_cloning * logp.mean()
        self._step(self.actor_opt, actor_loss, ac.actor.parameters())
        self._step(self.critic_opt, critic_loss, ac.critic.parameters())
        ac.update_slow_critic()
        return {**metrics, **ac_metrics}

    def _step(self, opt, loss, params):
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params), self.agent.preset.grad_clip)
        opt.step()


def optimizer_tensors(optimizers: dict) -> dict:
    """The optimisers' per-parameter state as flat tensors (safetensors), keyed name/index/field."""
    tensors = {}
    for name, optimizer in optimizers.items():
        for index, state in optimizer.state_dict()['state'].items():
            for field, value in state.items():
                tensors[f'{name}/{index}/{field}'] = torch.as_tensor(value).contiguous()
    return tensors


def load_optimizer_tensors(optimizers: dict, tensors: dict) -> None:
    """Inverse of optimizer_tensors onto optimisers over the same parameters (other keys are ignored)."""
    for name, optimizer in optimizers.items():
        state: dict = {}
        for key, value in tensors.items():
            owner, _, rest = key.partition('/')
            if owner == name and rest.count('/') == 1:
                index, field = rest.split('/')
                state.setdefault(int(index), {})[field] = value
        optimizer.load_state_dict({'state': state, 'param_groups': optimizer.state_dict()['param_groups']})
