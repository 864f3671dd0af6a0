"""The anytime planner (core/planner.py): deadlines and the one-hot fast path, with the tiny preset.
No timing is asserted: deadlines lie in the past or far ahead, or the planner reads a fake clock."""
import time

import numpy as np
import pytest
import torch

from adawm_planner.core import lora
from adawm_planner.core.adaptation import MODEL_LORA_PREFIXES, POLICY_LORA_PREFIXES, linear_names
from adawm_planner.core.agent import Agent
from adawm_planner.core.config import PlannerConfig
from adawm_planner.core import planner
from adawm_planner.core.networks import OneHotLinear
from adawm_planner.core.planner import plan
from adawm_planner.core.presets import load_preset
from toy_env import single_thread  # noqa: F401 (fixture)

BEV, EGO, ACTIONS = (64, 64, 5), 7, 15


def make_agent(discrete=True):
    torch.manual_seed(0)
    agent = Agent(load_preset('tiny'), BEV, EGO, ACTIONS if discrete else 2, discrete=discrete, seed=0)
    g = torch.Generator().manual_seed(1)
    obs = {'bev': torch.randint(0, 256, BEV, generator=g, dtype=torch.uint8).numpy(),
           'ego': torch.randn(EGO, generator=g).numpy()}
    latent = agent.world_model.obs_step(None, torch.zeros(agent.action_dim), obs, True,
                                        torch.Generator().manual_seed(2))
    return agent, latent


PLAN_KEYS = ('actions', 'rewards', 'conts', 'terminal_values', 'scores', 'ego')


def assert_same_plan(a, b):
    for key in PLAN_KEYS:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert a['best'] == b['best'] and a['iterations'] == b['iterations']


def run(agent, latent, seed=3, **kwargs):
    generator = torch.Generator().manual_seed(seed)
    action, info = plan(agent.world_model, agent.actor_critic, latent, 12, 5, 0.1, generator, **kwargs)
    return action, info, generator


class FakeClock:
    """time.perf_counter for the planner: advances 1 s per reading, so a deadline cuts at a known step."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        self.now += 1.0
        return self.now


@pytest.mark.parametrize('discrete', [True, False])
def test_a_plan_cut_by_the_deadline_is_the_shorter_horizons_plan(discrete, monkeypatch):
    agent, latent = make_agent(discrete)
    # Readings: start 1; per step a check, a start and an end (each step "takes" 1 s). Before step 2 the
    # check reads 8, and 8 + 2 × 1 s > 9.5: the plan stops after 2 of 5 steps.
    monkeypatch.setattr(planner.time, 'perf_counter', FakeClock())
    cut_action, cut, _ = run(agent, latent, deadline=9.5)
    monkeypatch.undo()
    assert cut['horizon'] == 2 and cut['evaluated'] == 12 and not cut['fallback']
    generator = torch.Generator().manual_seed(3)
    action, short = plan(agent.world_model, agent.actor_critic, latent, 12, 2, 0.1, generator)
    for key in ('actions', 'rewards', 'conts', 'terminal_values', 'scores', 'ego'):
        torch.testing.assert_close(cut[key], short[key])
    assert cut['best'] == short['best']
    torch.testing.assert_close(cut_action, action)


@pytest.mark.parametrize('discrete', [True, False])
def test_a_deadline_far_ahead_gives_the_full_plan(discrete):
    agent, latent = make_agent(discrete)
    action, whole, g1 = run(agent, latent)
    timed_action, timed, g2 = run(agent, latent, deadline=time.perf_counter() + 3600)
    assert whole['horizon'] == timed['horizon'] == 5 and timed['evaluated'] == 12
    for key in ('actions', 'rewards', 'conts', 'terminal_values', 'scores'):
        torch.testing.assert_close(timed[key], whole[key])
    torch.testing.assert_close(timed_action, action)
    assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))  # same noise drawn


@pytest.mark.parametrize('discrete', [True, False])
def test_a_deadline_already_past_answers_with_the_actors_mode(discrete):
    agent, latent = make_agent(discrete)
    action, info, generator = run(agent, latent, deadline=time.perf_counter() - 1.0)
    assert info['fallback'] and info['evaluated'] == 0 and info['horizon'] == 0 and info['step_seconds'] is None
    with torch.inference_mode():
        mode = agent.actor_critic.actor.mode(agent.world_model.feat(latent))[0]
    torch.testing.assert_close(action, mode)
    assert info['actions'].shape == (1, 1, agent.action_dim) and info['best'] == 0
    # the generator advanced as a full plan's would: the next decision's noise does not depend on the cut
    _, _, full = run(agent, latent)
    assert torch.equal(torch.rand(3, generator=generator), torch.rand(3, generator=full))


def test_an_expected_step_time_beyond_the_budget_stops_before_it():
    agent, latent = make_agent()
    _, info, _ = run(agent, latent, deadline=time.perf_counter() + 600, step_estimate=3600.0)
    assert info['fallback'] and info['evaluated'] == 0


def test_the_scoring_of_the_steps_taken_counts_against_the_deadline(monkeypatch):
    agent, latent = make_agent()
    horizons = []
    for score_estimate in (None, 1.0):
        # FakeClock: before step 2 the check reads 5; 5 + 2 × 1 s fits 8.5, with 2 steps' scoring at 1 s not
        monkeypatch.setattr(planner.time, 'perf_counter', FakeClock())
        horizons.append(run(agent, latent, deadline=8.5, score_estimate=score_estimate)[1]['horizon'])
    assert horizons == [2, 1]


def test_candidate_zero_is_the_actors_mode_and_the_plan_reports_what_it_scored():
    agent, latent = make_agent()
    action, info, _ = run(agent, latent)
    with torch.inference_mode():
        mode = agent.actor_critic.actor.mode(agent.world_model.feat(latent))[0]
    torch.testing.assert_close(info['actions'][0, 0], mode)
    assert info['evaluated'] == 12 and info['horizon'] == 5 and not info['fallback']
    assert info['scores'].shape == (12,) and info['ego'].shape == (5, EGO)
    assert info['seconds'] > 0 and info['step_seconds'] > 0 and info['score_seconds'] > 0
    torch.testing.assert_close(action, info['actions'][info['best'], 0])


def test_one_hot_linear_equals_the_layer_on_the_dense_input():
    layer = torch.nn.Linear(6 + 3 * 4 + 2, 5)
    columns = torch.tensor([[0, 5, 9], [3, 4, 11]])   # one 1 in each group of 4 columns
    dense, after = torch.randn(2, 6), torch.randn(2, 2)
    x = torch.zeros(2, 20)
    x[:, :6] = dense
    x[:, 6:18].scatter_(1, columns, 1.0)
    x[:, 18:] = after
    with torch.no_grad():
        torch.testing.assert_close(OneHotLinear(layer, 6, 4)(columns, dense, after), layer(x))


def test_one_hot_linear_computes_lora_adapters_and_their_gradients():
    from peft import LoraConfig, inject_adapter_in_model
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6 + 3 * 4, 5))
    inject_adapter_in_model(LoraConfig(r=2, lora_alpha=4.0, target_modules=['0'], lora_dropout=0.0), model, 'policy')
    layer = model[0]
    torch.nn.init.normal_(layer.lora_B['policy'].weight)   # B = 0 at init would hide the adapter
    columns = torch.tensor([[0, 5, 9], [3, 4, 11], [1, 6, 8]])
    dense = torch.randn(3, 6)
    x = torch.zeros(3, 18)
    x[:, :6] = dense
    x[:, 6:].scatter_(1, columns, 1.0)
    grads = []
    for out in (lambda: OneHotLinear(layer, 6, 4)(columns, dense),   # adapters as gathered tables
                lambda: OneHotLinear(layer, 6, 4, adapters_on_input=True)(columns, dense, inputs=x),
                lambda: layer(x)):
        layer.zero_grad()
        value = out()
        value.square().sum().backward()
        grads.append((value.detach(), [p.grad.clone() for p in (layer.lora_A['policy'].weight,
                                                                  layer.lora_B['policy'].weight)]))
    for fast in grads[:2]:
        torch.testing.assert_close(fast[0], grads[2][0])
        for fast_grad, dense_grad in zip(fast[1], grads[2][1]):
            torch.testing.assert_close(fast_grad, dense_grad)


def test_lora_wrapped_layers_plan_the_same_as_their_base_while_b_is_zero():
    agent, latent = make_agent()
    _, before, _ = run(agent, latent)
    # peft initialises B = 0: the adapted layers compute what the base does
    lora.attach(agent.world_model, 'model', 4, 8.0, linear_names(agent.world_model, MODEL_LORA_PREFIXES))
    lora.attach(agent.actor_critic, 'policy', 4, 8.0, linear_names(agent.actor_critic, POLICY_LORA_PREFIXES))
    _, after, _ = run(agent, latent)
    np.testing.assert_allclose(after['scores'].numpy(), before['scores'].numpy(), rtol=1e-5, atol=1e-6)
    assert after['best'] == before['best']


@pytest.mark.parametrize('discrete', [True, False])
def test_one_iteration_is_the_one_round_planner(discrete):
    agent, latent = make_agent(discrete)
    action, one_round, g1 = run(agent, latent)
    same_action, same, g2 = run(agent, latent, search=PlannerConfig(iterations=1))
    assert_same_plan(same, one_round)
    torch.testing.assert_close(same_action, action)
    assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))


def test_a_continuous_actor_plans_one_round_whatever_the_search():
    agent, latent = make_agent(discrete=False)
    _, one_round, _ = run(agent, latent)
    _, searched, _ = run(agent, latent, search=PlannerConfig(iterations=4))
    assert_same_plan(searched, one_round)


def test_the_search_repeats_for_a_fixed_generator():
    agent, latent = make_agent()
    action, first, _ = run(agent, latent, search=PlannerConfig(iterations=4))
    again_action, again, _ = run(agent, latent, search=PlannerConfig(iterations=4))
    assert first['iterations'] == 4 and first['actions'].shape == (3 * 12 // PlannerConfig().particles, 5, ACTIONS)
    assert_same_plan(again, first)
    torch.testing.assert_close(again['refit'], first['refit'], rtol=0, atol=0)
    torch.testing.assert_close(again_action, action)


def test_a_deadline_between_rounds_answers_with_the_rounds_finished(monkeypatch):
    agent, latent = make_agent()
    knobs = PlannerConfig(iterations=3)
    # Readings: start 1, round 1's 5 steps (check, start, end: 1 s each) end at 16; round 2 starts as its
    # 5 steps and scoring fit (17 + 6 <= 35) and ends at 32; round 3 would end after 33 + 6 > 35.
    monkeypatch.setattr(planner.time, 'perf_counter', FakeClock())
    cut_action, cut, cut_generator = run(agent, latent, deadline=35, search=knobs)
    monkeypatch.undo()
    two_action, two_rounds, _ = run(agent, latent, search=PlannerConfig(iterations=2))
    assert cut['iterations'] == 2 and cut['horizon'] == 5
    assert_same_plan(cut, two_rounds)
    torch.testing.assert_close(cut_action, two_action)
    _, _, full = run(agent, latent, search=knobs)   # the generator advanced as the whole search's would
    assert torch.equal(torch.rand(3, generator=cut_generator), torch.rand(3, generator=full))


def test_a_round_cut_midway_is_dropped(monkeypatch):
    agent, latent = make_agent()
    # Round 2 starts (17 + 6 <= 25) but its third step does not fit (24 + 2 > 25): round 1 answers.
    monkeypatch.setattr(planner.time, 'perf_counter', FakeClock())
    cut_action, cut, _ = run(agent, latent, deadline=25, search=PlannerConfig(iterations=3))
    monkeypatch.undo()
    action, one_round, _ = run(agent, latent)
    assert cut['iterations'] == 1 and 'refit' not in cut
    assert_same_plan(cut, one_round)
    torch.testing.assert_close(cut_action, action)


def test_a_deadline_already_past_answers_with_the_actors_mode_whatever_the_search():
    agent, latent = make_agent()
    action, info, _ = run(agent, latent, deadline=time.perf_counter() - 1.0,
                          search=PlannerConfig(iterations=3))
    assert info['fallback'] and info['iterations'] == 0
    with torch.inference_mode():
        torch.testing.assert_close(action, agent.actor_critic.actor.mode(agent.world_model.feat(latent))[0])
