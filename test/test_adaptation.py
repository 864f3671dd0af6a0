"""Alignment-driven finetuning on the tiny preset: each strategy trains what it should and nothing else."""
import copy
import dataclasses

import numpy as np
import pytest
import torch

from adawm_planner.core import lora
from adawm_planner.core.adaptation import Finetuner
from adawm_planner.core.config import STRATEGIES, FinetuneConfig
from adawm_planner.core.agent import Agent
from adawm_planner.core.presets import load_preset
from adawm_planner.core.replay import Replay
from toy_env import make_toy_env


def toy_agent_and_data(seed=0, steps=200):
    torch.manual_seed(seed)
    env = make_toy_env()
    agent = Agent.for_env(load_preset('tiny'), env, seed)
    replay = Replay(steps + 1, env.observation_space['bev'].shape, agent.world_model.ego_dim, agent.action_dim, seed)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    replay.add(obs, np.zeros(agent.action_dim), 0.0, True, False)
    for _ in range(steps):
        action = int(rng.integers(15))
        obs, reward, terminated, truncated, _ = env.step(action)
        replay.add(obs, agent.encode_action(action).numpy(), reward, False, terminated)
        if terminated or truncated:
            obs, _ = env.reset()
            replay.add(obs, np.zeros(agent.action_dim), 0.0, True, False)
    return agent, replay


def snapshot(module):
    return {k.replace('.base_layer.', '.'): v.detach().clone() for k, v in module.named_parameters()
            if '.lora_' not in k}


def changed(before, module):
    after = snapshot(module)
    return {k for k in before if not torch.equal(before[k], after[k])}


@pytest.mark.parametrize('strategy', STRATEGIES)
def test_each_strategy_runs_and_trains_only_its_side(strategy):
    agent, replay = toy_agent_and_data()
    wm_before, ac_before = snapshot(agent.world_model), snapshot(agent.actor_critic)
    known_side = 'model' if strategy == 'oracle' else 'unknown'
    tuner = Finetuner(agent, FinetuneConfig(strategy=strategy, threshold_c=2.0, window=16, known_side=known_side))
    decisions = []
    for _ in range(4):
        out = tuner.step(replay.sample(4, 8), replay.sample(1, 16))
        decisions.append(out['decision'])
        assert 0.0 <= out['eps_model'] <= 1.0 and 0.0 <= out['eps_policy'] <= out['eps_policy_max'] <= 1.0
    wm_changed, ac_changed = changed(wm_before, agent.world_model), changed(ac_before, agent.actor_critic)
    if strategy == 'full':
        assert wm_changed and ac_changed and decisions == ['both'] * 4
    else:   # LoRA strategies and 'none' leave every base weight bit-identical
        assert not wm_changed and not ac_changed
    lora_wm = lora.adapter_tensors(agent.world_model, 'model')
    lora_ac = lora.adapter_tensors(agent.actor_critic, 'policy')
    assert bool(lora_wm) == (strategy in ('adawm', 'model', 'alternate', 'oracle'))
    assert bool(lora_ac) == (strategy in ('adawm', 'policy', 'alternate'))
    if strategy == 'alternate':
        assert decisions == ['model', 'policy', 'model', 'policy']
    if strategy == 'none':
        assert decisions == ['none'] * 4


def test_adawm_follows_the_rule_and_policy_mismatch_starts_at_zero():
    agent, replay = toy_agent_and_data(seed=1)
    tuner = Finetuner(agent, FinetuneConfig(strategy='adawm', threshold_c=3.0, window=16))
    first = tuner.measure(replay.sample(1, 16))
    assert first['eps_policy'] == pytest.approx(0.0, abs=1e-6)   # nothing finetuned yet: π_t = π_pretrained
    for _ in range(6):
        out = tuner.step(replay.sample(4, 8), replay.sample(1, 16))
        expected = ('model' if out['eps_model'] > 3.0 * out['eps_policy'] else
                    'policy' if out['eps_policy'] > 0 else 'none')
        assert out['decision'] == expected


def test_trainable_fraction_is_reported_and_small():
    agent, _ = toy_agent_and_data()
    report = Finetuner(agent, FinetuneConfig(strategy='adawm', rank=2)).trainable_report()
    for side in ('model', 'policy'):
        assert 0 < report[side]['trainable'] and 0 < report[side]['fraction'] < 0.5


def test_exported_adapters_reproduce_the_finetuned_agent():
    agent, replay = toy_agent_and_data(seed=2)
    base_state = {k: v.clone() for k, v in agent.state_dict().items()}
    tuner = Finetuner(agent, FinetuneConfig(strategy='alternate', window=16))
    for _ in range(4):
        tuner.step(replay.sample(4, 8), replay.sample(1, 16))
    adapters = {t: lora.parse(tuner.export_adapter(t, version=1).blob) for t in ('model', 'policy')}

    fresh_agent, _ = toy_agent_and_data(seed=2)
    fresh_agent.load_state_dict(base_state)
    Finetuner(fresh_agent, FinetuneConfig(strategy="alternate", window=16))   # attaches the LoRA layers
    for target, module in (('model', fresh_agent.world_model), ('policy', fresh_agent.actor_critic)):
        lora.load_into(module, adapters[target])
    window = replay.sample(1, 16)
    with torch.no_grad():
        feat = lambda a: a.world_model.feat(a.world_model.observe(window['bev'], window['ego'], window['action'],
                                                                  window['is_first'])[0])
        torch.manual_seed(0)
        expected = agent.actor_critic.actor(feat(agent))
        torch.manual_seed(0)
        got = fresh_agent.actor_critic.actor(feat(fresh_agent))
    assert torch.allclose(got, expected, atol=1e-6)


def test_exported_adapter_applies_through_an_adapter_slot():
    """What the planner does with a pushed adapter: rebuild the adapted module from the base alone."""
    agent, replay = toy_agent_and_data(seed=3)
    slots = {'model': lora.AdapterSlot(agent.world_model, 'model'),
             'policy': lora.AdapterSlot(agent.actor_critic, 'policy')}
    tuner = Finetuner(agent, FinetuneConfig(strategy='alternate', window=16))
    for _ in range(2):
        tuner.step(replay.sample(4, 8), replay.sample(1, 16))
    for target, slot in slots.items():
        adapter = tuner.export_adapter(target, version=7)
        module, parsed = slot.prepare(adapter.blob, adapter.sha256, version=7)
        assert parsed.meta.target_modules == tuple(tuner.lora_targets[target])
        expected = lora.adapter_tensors(agent.world_model if target == 'model' else agent.actor_critic, target)
        assert all(torch.equal(lora.adapter_tensors(module, target)[k], v) for k, v in expected.items())


def test_oracle_updates_the_known_side():
    agent, replay = toy_agent_and_data(seed=4)
    with pytest.raises(ValueError):
        FinetuneConfig(strategy='oracle')                        # an oracle has to be told the answer
    expected = {'model': ['model'] * 3, 'policy': ['policy'] * 3, 'both': ['model', 'policy', 'model']}
    for side, decisions in expected.items():
        tuner = Finetuner(agent if side == 'model' else toy_agent_and_data(seed=4)[0],
                          FinetuneConfig(strategy='oracle', known_side=side, window=16))
        assert [tuner.step(replay.sample(4, 8), replay.sample(1, 16))['decision'] for _ in range(3)] == decisions


def test_calibrated_mismatch_with_a_reference():
    """With a reference, ε_P and ε_π are the calibrated estimates (in [0, 1]; the uncalibrated TVs are kept),
    and ε_π is not pinned to 0 before the first update."""
    from adawm_planner.experiments import mismatch_reference
    from adawm_planner.core import mismatch
    agent, replay = toy_agent_and_data(seed=5, steps=400)
    # a reference from the toy task itself, through the same scoring code the shipped reference uses
    episodes = [{'bev': replay.bev[i:i + 40], 'ego': replay.ego[i:i + 40], 'action': replay.action[i:i + 40],
                 'reward': replay.reward[i:i + 40], 'is_first': np.arange(40) == 0} for i in range(0, 400, 40)]
    halves = {'cdf': {}, 'null': {}}
    for i, episode in enumerate(episodes):
        for signal, values in mismatch_reference.episode_scores(agent, episode, 3).items():
            halves['cdf' if i % 2 == 0 else 'null'].setdefault(signal, []).append(values)
    join = lambda d, without=(): {k: np.concatenate(v) for k, v in d.items() if k not in without}
    reference = mismatch.Reference(3, join(halves['cdf']), join(halves['null']))
    tuner = Finetuner(agent, FinetuneConfig(strategy='adawm', threshold_c=1.0, window=16), reference=reference)
    out = tuner.measure(replay.sample(1, 16))
    assert 0.0 <= out['eps_model'] <= 1.0 and 0.0 <= out['eps_policy'] <= 1.0
    assert out['tv_policy'] == pytest.approx(0.0, abs=1e-6) and 0 < out['tv_prior_posterior'] <= 1
    worse = replay.sample(1, 16)
    worse['reward'] = worse['reward'] - 100.0                 # far less reward than the reference: ε_π saturates
    assert tuner.measure(worse)['eps_policy'] > 0.9
    # the episode-level term: the pretrained agent failed 1 of 40 reference episodes driving as the data was
    reference.failures = {'sample': np.array([1.0] + [0.0] * 39)}
    tuner.driving_mode = 'sample'
    window = replay.sample(1, 16)
    calm = tuner.measure({**window, 'failures': np.zeros(8)})
    failing = tuner.measure({**window, 'failures': np.array([1, 1, 1, 0, 1, 0, 1, 1.0])})
    assert calm['eps_policy_episodes'] == 0.0 and failing['eps_policy_episodes'] > 0.6
    assert (failing['eps_model'], failing['eps_policy']) == (calm['eps_model'], calm['eps_policy'])
    assert tuner.measure(window)['eps_policy_episodes'] == 0.0      # no outcomes known
    # both per-step signals silent: failing episodes make the rule act, on the policy
    assert tuner.choose({**calm, 'eps_model': 0.0, 'eps_policy': 0.0}) is None
    assert tuner.choose({**failing, 'eps_model': 0.0, 'eps_policy': 0.0}) == 'policy'
    # the improvement view of ε_π: the same window, the reward shortfall kept beside it in the trace
    improving = Finetuner(toy_agent_and_data(seed=5, steps=400)[0], FinetuneConfig(strategy='adawm', window=16, policy_signal='improvement'),
                          reference=reference)
    out = improving.measure(window)
    assert 0.0 <= out['eps_policy'] <= 1.0 and out['eps_policy_reward'] == tuner.measure(window)['eps_policy']
    assert out['eps_model'] == tuner.measure(window)['eps_model']
    lacking = mismatch.Reference(3, join(halves['cdf'], ('improvement',)), join(halves['null'], ('improvement',)))
    with pytest.raises(ValueError, match='improvement'):
        Finetuner(agent, FinetuneConfig(strategy='adawm', policy_signal='improvement'), reference=lacking)
    # the failure view: ε_π is the episode-level term alone, the reward shortfall kept beside it in the trace
    by_failures = Finetuner(toy_agent_and_data(seed=5, steps=400)[0],
                            FinetuneConfig(strategy='adawm', window=16, policy_signal='failures'),
                            reference=reference, driving_mode='sample')
    calm_f = by_failures.measure({**worse, 'failures': np.zeros(8)})
    failing_f = by_failures.measure({**worse, 'failures': np.array([1, 1, 1, 0, 1, 0, 1, 1.0])})
    assert calm_f['eps_policy'] == 0.0 and calm_f['eps_policy_reward'] > 0.9     # a reward shortfall alone: 0
    assert failing_f['eps_policy'] == failing_f['eps_policy_episodes'] > 0.6
    with pytest.raises(ValueError, match="'failures' needs"):
        Finetuner(toy_agent_and_data(seed=5, steps=400)[0], FinetuneConfig(strategy='adawm', policy_signal='failures'))


def test_model_update_on_the_prior_head_takes_the_full_losss_step():
    """The fast model update (filter without gradients, the dynamics KL alone) moves the prior-head adapters
    exactly as the whole world-model loss does: no other term reaches them."""
    agent, replay = toy_agent_and_data(seed=2)
    # an untrained model's KL sits below the free nats, where neither loss has a gradient
    agent.world_model.preset = dataclasses.replace(agent.world_model.preset, free_nats=0.0)
    batch = replay.sample(4, 8)
    adapters, grads = {}, {}
    for fast in (True, False):
        torch.manual_seed(7)
        tuner = Finetuner(copy.deepcopy(agent), FinetuneConfig(strategy='model'))
        assert tuner.prior_head_only
        tuner.prior_head_only = fast
        for _ in range(3):
            tuner.update_model(batch)
        wm = tuner.agent.world_model
        adapters[fast] = lora.adapter_tensors(wm, 'model')
        grads[fast] = {n: p.grad.clone() for n, p in wm.named_parameters() if p.requires_grad}
    moved = [name for name, value in adapters[True].items() if 'lora_B' in name and value.abs().max() > 0]
    assert moved   # B starts at 0: the step did something
    for name, value in adapters[True].items():
        torch.testing.assert_close(value, adapters[False][name], rtol=1e-4, atol=1e-6)
    for name, value in grads[True].items():   # gradients too: Adam would hide a wrong scale
        torch.testing.assert_close(value, grads[False][name], rtol=1e-4, atol=1e-7)


def test_a_frozen_encoders_embeddings_are_kept_in_the_replay():
    agent, replay = toy_agent_and_data(seed=3, steps=40)
    Finetuner(copy.deepcopy(agent), FinetuneConfig(strategy='full')).attach(replay)
    assert 'embed' not in replay.sample(2, 8)   # full finetuning trains the encoder: nothing to keep
    tuner = Finetuner(agent, FinetuneConfig(strategy='adawm'))
    tuner.attach(replay)
    wm = agent.world_model
    embed = lambda batch: wm.embed(batch['bev'], batch['ego']).detach()
    for _ in range(2):   # computed, then read back
        batch = replay.sample(4, 8)
        torch.testing.assert_close(batch['embed'], embed(batch), rtol=1e-4, atol=1e-5)
    # a step written over is embedded again
    old = replay.sample(1, 1)
    obs = {'bev': np.full_like(replay.bev[0], 200), 'ego': replay.ego[0] + 1.0}
    replay.add(obs, np.zeros(agent.action_dim), 0.0, False, False)
    newest = replay.newest(1)
    torch.testing.assert_close(newest['embed'], embed(newest), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(newest['embed'], embed(old))
    tuner.step(replay.sample(4, 8), replay.newest(16))   # the finetuning step reads the kept embeddings


def test_measuring_reuses_the_filter_only_where_the_pretrained_copy_filters_the_same():
    agent, replay = toy_agent_and_data(seed=4)
    tuner = Finetuner(agent, FinetuneConfig(strategy='alternate', window=16))
    assert tuner.filter_unchanged   # adapters on the prior head and the policy leave the filter as it was
    for _ in range(4):
        tuner.step(replay.sample(4, 8), replay.sample(1, 16))
    window = replay.sample(1, 16)
    shared = tuner.measure(window)
    tuner.filter_unchanged = False   # filter again with the pretrained copy
    assert tuner.measure(window) == shared and shared['eps_policy'] > 0
    assert not Finetuner(copy.deepcopy(agent), FinetuneConfig(strategy='full')).filter_unchanged
