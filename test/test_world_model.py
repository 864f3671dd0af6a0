"""World model, actor-critic and their building blocks with the tiny preset."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from adawm_planner.core.actor_critic import ActorCritic
from adawm_planner.core.agent import Agent
from adawm_planner.core.networks import TwoHot, symexp, symlog, symlog_bins
from adawm_planner.core.presets import load_preset, preset_names
from adawm_planner.core.replay import Replay
from adawm_planner.core.world_model import WorldModel
from toy_env import single_thread  # noqa: F401 (fixture)

BEV, EGO, ACTIONS = (64, 64, 5), 7, 15


def synthetic_batch(batch=3, length=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {'bev': torch.randint(0, 256, (batch, length, *BEV), generator=g, dtype=torch.uint8),
            'ego': torch.randn(batch, length, EGO, generator=g),
            'action': nn.functional.one_hot(torch.randint(0, ACTIONS, (batch, length), generator=g), ACTIONS).float(),
            'reward': torch.randn(batch, length, generator=g),
            'is_first': torch.zeros(batch, length, dtype=torch.bool).index_fill_(1, torch.tensor([0]), True),
            'is_terminal': torch.zeros(batch, length, dtype=torch.bool)}


def test_presets_load_and_differ():
    assert {'tiny', 'small'} <= set(preset_names())
    tiny, small = load_preset('tiny'), load_preset('small')
    assert tiny.deter < small.deter and small.plan_candidates == 64 and small.plan_horizon == 15
    with pytest.raises(KeyError, match='unknown preset'):
        load_preset('huge')


def test_symlog_and_two_hot():
    x = torch.tensor([-1000.0, -3.0, 0.0, 0.5, 42.0])
    torch.testing.assert_close(symexp(symlog(x)), x)
    bins = symlog_bins(255)
    # Logits that put all mass on the two-hot encoding of x recover x as the mean.
    target = torch.tensor([2.5])
    logits = torch.full((1, 255), -1e4, dtype=torch.float32)
    log_p = TwoHot(torch.zeros(1, 255), bins).log_prob(target)
    assert log_p.shape == (1,) and torch.isfinite(log_p).all()
    y = symlog(target)
    hi = int(torch.searchsorted(bins, y, right=True))
    w = float((y - bins[hi - 1]) / (bins[hi] - bins[hi - 1]))
    logits[0, hi - 1], logits[0, hi] = np.log(1 - w), np.log(w)
    torch.testing.assert_close(TwoHot(logits, bins).mean(), target, rtol=1e-4, atol=1e-4)


def test_shapes_of_observe_imagine_loss_and_filter_step():
    p = load_preset('tiny')
    wm = WorldModel(p, BEV, EGO, ACTIONS)
    batch = synthetic_batch()
    posts, priors = wm.observe(batch['bev'], batch['ego'], batch['action'], batch['is_first'])
    for states in (posts, priors):
        assert states['deter'].shape == (3, 5, p.deter)
        assert states['stoch'].shape == states['logits'].shape == (3, 5, p.stoch, p.classes)
    # Stochastic state is one-hot per factor; unimix keeps every class possible.
    assert ((posts['stoch'] > 0.5).sum(-1) == 1).all()
    torch.testing.assert_close(posts['stoch'].sum(-1), torch.ones(3, 5, p.stoch))
    assert (posts['logits'].exp() >= p.unimix / p.classes * 0.999).all()
    assert wm.feat(posts).shape == (3, 5, p.deter + p.stoch * p.classes)

    loss, metrics = wm.loss(batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert {'bev_loss', 'reward_loss', 'cont_loss', 'kl_dyn', 'kl_rep'} <= set(metrics)

    start = {k: v[:, -1] for k, v in posts.items()}
    actions = synthetic_batch(3, 4, seed=1)['action']
    traj = wm.imagine(start, actions, 4)
    assert traj['feat'].shape == (3, 5, wm.feat_dim)
    assert traj['reward'].shape == traj['cont'].shape == (3, 4)
    ac = ActorCritic(p, wm.feat_dim, ACTIONS)
    traj = wm.imagine(start, lambda f: ac.actor.sample(f)[0], 6)
    assert traj['action'].shape == (3, 6, ACTIONS) and (traj['action'].sum(-1) == 1).all()

    obs = {'bev': batch['bev'][0, 0].numpy(), 'ego': batch['ego'][0, 0].numpy()}
    state = wm.obs_step(None, torch.zeros(ACTIONS), obs, is_first=True)
    assert state['deter'].shape == (1, p.deter)


def test_lora_targets_are_named_linear_layers():
    agent = Agent(load_preset('tiny'), BEV, EGO, ACTIONS)
    modules = dict(agent.named_modules())
    for name in ['world_model.rssm.gru', 'world_model.rssm.img_in', 'world_model.rssm.img_out',
                 'world_model.rssm.prior', 'world_model.rssm.obs_out', 'world_model.rssm.post',
                 'world_model.ego_encoder.net.0', 'actor_critic.actor.mlp.net.0', 'actor_critic.actor.mlp.out',
                 'actor_critic.critic.net.0', 'actor_critic.critic.out']:
        assert isinstance(modules[name], nn.Linear), name
    assert not any(isinstance(m, (nn.GRUCell, nn.GRU)) for m in modules.values())


def test_actor_critic_loss_and_continuous_actions():
    p = load_preset('tiny')
    agent = Agent(p, BEV, EGO, 2, discrete=False)
    wm, ac = agent.world_model, agent.actor_critic
    batch = synthetic_batch()
    batch['action'] = torch.rand(3, 5, 2) * 2 - 1
    _, _, posts = wm.loss_and_posts(batch)
    start = {k: v.detach().flatten(0, 1) for k, v in posts.items()}
    actor_loss, critic_loss, metrics = ac.loss(wm, start, torch.ones(15))
    actor_loss.backward()
    critic_loss.backward()
    assert all(torch.isfinite(q.grad).all() for q in ac.actor.parameters())
    assert all(q.grad is None for q in wm.parameters())  # imagination does not train the model
    action, state, info = agent.act({'bev': batch['bev'][0, 0].numpy(), 'ego': batch['ego'][0, 0].numpy()})
    assert action.shape == (2,) and np.all(np.abs(action) <= 1) and info['actions'].shape[-1] == 2


def test_lambda_returns_match_hand_computation():
    p = load_preset('tiny', gamma=0.5, lam=0.5)
    ac = ActorCritic(p, 4, 3)
    reward = torch.tensor([[1.0, 2.0]])
    cont = torch.tensor([[1.0, 0.0]])
    value = torch.tensor([[0.0, 4.0, 8.0]])
    # R1 = r2 + γ c2 (...) = 2 (episode ends); R0 = r1 + γ c1 ((1-λ) v1 + λ R1) = 1 + 0.5 (2 + 1) = 2.5
    torch.testing.assert_close(ac.lambda_returns(reward, cont, value), torch.tensor([[2.5, 2.0]]))


def record_env_data(steps=600, seed=0):
    from adawm_planner.sim import make_env
    from adawm_planner.sim import default_task
    env = make_env(default_task(), seed=seed)
    env.action_space.seed(seed)
    ego_dim = env.observation_space['ego'].shape[0]
    replay = Replay(steps + 100, env.observation_space['bev'].shape, ego_dim, ACTIONS, seed)
    obs, _ = env.reset(seed=seed)
    replay.add(obs, np.zeros(ACTIONS), 0.0, True, False)
    for _ in range(steps):
        action = env.action_space.sample()
        obs, reward, terminated, truncated, _ = env.step(action)
        replay.add(obs, np.eye(ACTIONS)[action], reward, False, terminated)
        if terminated or truncated:
            obs, _ = env.reset()
            replay.add(obs, np.zeros(ACTIONS), 0.0, True, False)
    return replay, env.observation_space['bev'].shape, ego_dim


def test_world_model_loss_falls_on_recorded_env_data():
    torch.manual_seed(0)
    replay, bev_shape, ego_dim = record_env_data()
    wm = WorldModel(load_preset('tiny'), bev_shape, ego_dim, ACTIONS)
    held_out = replay.sample(8, 8)
    opt = torch.optim.Adam(wm.parameters(), 1e-3)
    with torch.no_grad():
        before, _ = wm.loss(held_out)
    for _ in range(120):
        loss, _ = wm.loss(replay.sample(8, 8))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after, metrics = wm.loss(held_out)
    assert after < 0.6 * before, (before.item(), metrics)


@pytest.mark.parametrize('adapted', [False, True])
def test_imagining_on_one_hot_columns_is_imagining_with_the_actor(adapted):
    """imagine_actor (the training imagination, gathering weight rows) gives imagine's trajectory with the
    actor's samples: same draws, same order — with LoRA adapters on the actor too."""
    from adawm_planner.core import lora
    from adawm_planner.core.adaptation import POLICY_LORA_PREFIXES, linear_names
    torch.manual_seed(0)
    p = load_preset('tiny')
    wm, ac = WorldModel(p, BEV, EGO, ACTIONS), ActorCritic(p, WorldModel(p, BEV, EGO, ACTIONS).feat_dim, ACTIONS)
    if adapted:
        lora.attach(ac, 'policy', 4, 8.0, linear_names(ac, POLICY_LORA_PREFIXES))
        for name, param in ac.named_parameters():
            if 'lora_B' in name:
                torch.nn.init.normal_(param, std=0.1)   # B = 0 at init would hide the adapter
    batch = synthetic_batch(batch=4, length=3)
    with torch.no_grad():
        posts, _ = wm.observe(batch['bev'], batch['ego'], batch['action'], batch['is_first'])
        start = {k: v.flatten(0, 1) for k, v in posts.items()}
        dense_noise, fast_noise = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
        dense = wm.imagine(start, lambda f: ac.actor.sample(f, dense_noise)[0], 6, dense_noise)
        fast = wm.imagine_actor(start, ac.actor, 6, fast_noise)
    assert torch.equal(fast['action'], dense['action'])
    for key in ('feat', 'deter', 'reward', 'cont'):
        torch.testing.assert_close(fast[key], dense[key], rtol=1e-4, atol=1e-5)
