"""The agent the planner node and the training loop drive: world model + actor-critic + planner."""
import numpy as np
import torch
import torch.nn as nn

from adawm_planner.core.actor_critic import ActorCritic
from adawm_planner.core.config import PlannerConfig
from adawm_planner.core.planner import plan
from adawm_planner.core.world_model import WorldModel


SIDES = {'model': 'world_model', 'policy': 'actor_critic'}   # adapter target -> the module it adapts


class Agent(nn.Module):
    def __init__(self, preset, bev_shape, ego_dim, action_dim, discrete=True, seed=0):
        super().__init__()
        self.preset, self.discrete, self.action_dim = preset, discrete, action_dim
        self.world_model = WorldModel(preset, bev_shape, ego_dim, action_dim)
        self.actor_critic = ActorCritic(preset, self.world_model.feat_dim, action_dim, discrete)
        self.generator = torch.Generator().manual_seed(seed)
        self.search = PlannerConfig()   # plan mode's search knobs (iterations, elites, particles, refit_mix)

    @classmethod
    def for_env(cls, preset, env, seed=0):
        bev_shape = tuple(int(n) for n in env.observation_space['bev'].shape)
        ego_dim = int(env.observation_space['ego'].shape[0])
        discrete = hasattr(env.action_space, 'n')
        action_dim = int(env.action_space.n if discrete else env.action_space.shape[0])
        return cls(preset, bev_shape, ego_dim, action_dim, discrete, seed)

    def module(self, target: str) -> nn.Module:
        """The side an adapter target names: 'model' -> world model, 'policy' -> actor-critic."""
        if target not in SIDES:
            raise ValueError(f'target must be one of {tuple(SIDES)}, got {target!r}')
        return getattr(self, SIDES[target])

    def set_module(self, target: str, module: nn.Module) -> None:
        self.module(target)   # checks the name
        setattr(self, SIDES[target], module)

    def spec(self):
        """What a checkpoint must match besides the preset."""
        wm = self.world_model
        return {'bev_shape': list(wm.bev_shape), 'ego_dim': wm.ego_dim, 'action_dim': self.action_dim,
                'discrete': self.discrete}

    def encode_action(self, action):
        """Env action (index or vector) -> world-model action vector (A,)."""
        if self.discrete:
            return torch.nn.functional.one_hot(torch.as_tensor(int(action)), self.action_dim).float()
        return torch.as_tensor(np.asarray(action), dtype=torch.float32)

    def decode_action(self, action):
        if self.discrete:
            return int(action.argmax())
        return action.numpy().astype(np.float32)

    @torch.inference_mode()
    def act(self, obs, state=None, mode='plan', candidates=None, horizon=None, deadline=None, step_estimate=None,
            score_estimate=None):
        """One control step. `state` is None at the start of an episode, else what the last call returned.

        mode: 'plan' (imagination planner; K = `candidates`, H = `horizon`, the preset's where None; with a
        `deadline` (time.perf_counter()) it plans what fits, see planner.plan),
        'actor' (actor's most likely action, the fallback) or 'sample' (a sample from the actor, for
        exploration while collecting experience).
        Returns (env action, new state, plan_info); plan_info is empty unless mode == 'plan'."""
        prev_action = torch.zeros(self.action_dim) if state is None else state['action']
        latent = self.world_model.obs_step(None if state is None else state['latent'], prev_action, obs,
                                           is_first=state is None, generator=self.generator)
        feat = self.world_model.feat(latent)
        info = {}
        if mode == 'plan':
            p = self.preset
            action, info = plan(self.world_model, self.actor_critic, latent, candidates or p.plan_candidates,
                                horizon or p.plan_horizon, p.plan_prior_weight, self.generator, deadline,
                                step_estimate, score_estimate, self.search)
        elif mode == 'actor':
            action = self.actor_critic.actor.mode(feat)[0]
        elif mode == 'sample':
            action = self.actor_critic.actor.sample(feat, self.generator)[0][0]
        else:
            raise ValueError(f"mode must be 'plan', 'actor' or 'sample', not {mode!r}")
        return self.decode_action(action), {'latent': latent, 'action': action}, info
