"""TV estimators on hand-made distributions, and the alignment-driven decision rule."""
import pytest
import torch

from adawm_planner.core import mismatch


def test_tv_identical_disjoint_and_known_values():
    p = torch.tensor([0.5, 0.5, 0.0, 0.0])
    assert mismatch.tv(p, p).item() == 0.0
    assert mismatch.tv(p, torch.tensor([0.0, 0.0, 0.5, 0.5])).item() == 1.0
    assert mismatch.tv(p, torch.tensor([0.25, 0.25, 0.25, 0.25])).item() == pytest.approx(0.5)
    assert mismatch.tv(torch.tensor([0.9, 0.1]), torch.tensor([0.6, 0.4])).item() == pytest.approx(0.3)


def test_prior_posterior_tv_averages_factors():
    one_hot = torch.eye(4)[[0, 1, 2]]                  # 3 factors, 4 classes
    shifted = torch.eye(4)[[0, 1, 3]]                  # last factor disjoint
    assert mismatch.prior_posterior_tv(one_hot, one_hot).item() == 0.0
    assert mismatch.prior_posterior_tv(one_hot, shifted).item() == pytest.approx(1 / 3)
    batch = torch.stack([one_hot, shifted])             # (time, factors, classes)
    assert mismatch.prior_posterior_tv(batch, batch.flip(0)).item() == pytest.approx(1 / 3)


def test_visitation_tv_zero_same_data_one_disjoint_and_half():
    codes = torch.tensor([[0, 1], [1, 0], [0, 0], [1, 1]])
    actions = torch.tensor([0, 1, 2, 3])
    kw = dict(classes=2, num_actions=4)
    assert mismatch.visitation_tv(codes, actions, codes, actions, **kw).item() == 0.0
    # actions shifted by two: factor 0 visits the same (class, action) cells, factor 1 disjoint ones
    assert mismatch.visitation_tv(codes, actions, codes, (actions + 2) % 4, **kw).item() == pytest.approx(0.5)
    assert mismatch.visitation_tv(codes, torch.zeros(4, dtype=torch.long), codes,
                                  torch.ones(4, dtype=torch.long), **kw).item() == 1.0
    # order of samples does not matter
    perm = torch.tensor([3, 1, 0, 2])
    assert mismatch.visitation_tv(codes[perm], actions[perm], codes, actions, **kw).item() == 0.0


def test_policy_tv_mean_and_max():
    current = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.2, 0.8]])
    pretrained = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.2, 0.8]])
    mean, worst = mismatch.policy_tv(current, pretrained)
    assert mean.item() == pytest.approx(0.5 / 3) and worst.item() == pytest.approx(0.5)


@pytest.mark.parametrize('eps_p, eps_pi, c, expected', [
    (0.30, 0.10, 2.0, 'model'),     # 0.30 > 0.20
    (0.30, 0.15, 2.0, 'policy'),    # 0.30 == 0.30 is not greater
    (0.30, 0.20, 2.0, 'policy'),
    (0.05, 0.00, 50.0, 'model'),    # a pretrained policy (ε_π = 0) with any model mismatch
    (0.00, 0.05, 2.0, 'policy'),
    (0.00, 0.00, 2.0, None),        # neither side shows a shift: no update
])
def test_decision_rule_follows_the_inequality(eps_p, eps_pi, c, expected):
    assert mismatch.decide(eps_p, eps_pi, c) == expected


@pytest.mark.parametrize('eps_p, eps_pi, failures, expected', [
    (0.00, 0.00, 0.40, 'policy'),   # per-step signals silent, episodes failing: act, on the policy
    (0.30, 0.00, 0.40, 'model'),    # failures never outweigh a model mismatch the step signals show
    (0.30, 0.40, 0.90, 'policy'),   # ... nor add to ε_π in the ratio
    (0.30, 0.20, 0.90, 'model'),
    (0.00, 0.00, 0.00, None),
])
def test_failing_episodes_decide_whether_to_act_not_the_side(eps_p, eps_pi, failures, expected):
    assert mismatch.decide(eps_p, eps_pi, 1.0, failures) == expected


def test_decision_rule_refuses_non_positive_c():
    with pytest.raises(ValueError):
        mismatch.decide(0.1, 0.1, 0.0)


# ---- calibrated estimators ---------------------------------------------------------------------------------
import numpy as np   # noqa: E402


def test_ks_excess_known_values_and_one_sidedness():
    ref = np.arange(100, dtype=float)                     # uniform on 0..99
    assert mismatch.ks_excess(ref.copy(), ref) == pytest.approx(0.0, abs=0.011)
    assert mismatch.ks_excess(ref + 1000, ref) == pytest.approx(1.0)           # every score above the reference
    assert mismatch.ks_excess(ref - 1000, ref) == 0.0                          # lower scores are no shift
    assert mismatch.ks_excess(ref + 50, ref) == pytest.approx(0.5, abs=0.011)  # half the mass moved above
    assert mismatch.ks_excess(np.array([np.nan, np.nan]), ref) == 0.0


def test_ks_excess_is_the_supremum_of_the_ecdf_difference():
    """Against the definition, sup_x F_ref(x) − F_window(x) over every point where either ECDF steps (with
    ties on both sides, integer scores)."""
    rng = np.random.default_rng(3)
    for _ in range(300):
        ref = np.sort(rng.integers(0, 12, rng.integers(1, 80)).astype(float))
        window = rng.integers(-1, 13, rng.integers(1, 40)).astype(float)
        ecdf = lambda sample, x: np.searchsorted(np.sort(sample), x, side='right') / len(sample)
        points = np.concatenate([ref, window])
        expected = max(0.0, (ecdf(ref, points) - ecdf(window, points)).max())
        assert mismatch.ks_excess(window, ref) == pytest.approx(expected, abs=1e-12)


def synthetic_reference(rng, n=4000):
    return mismatch.Reference(3, {'model': rng.normal(size=n), 'reward': rng.normal(size=n)},
                              {'model': rng.normal(size=n), 'reward': rng.normal(size=n)}, {'task': 'synthetic'})


def test_reference_reads_zero_on_its_own_distribution_and_rises_with_shift(tmp_path):
    rng = np.random.default_rng(0)
    reference = synthetic_reference(rng)
    same = [reference.estimate('model', rng.normal(size=256)) for _ in range(200)]
    assert np.mean(np.array(same) > 0) <= 0.1 and np.median(same) == 0.0      # ≤ 5% + sampling slack above 0
    shifted = [reference.estimate('model', rng.normal(0.5, size=256)) for _ in range(20)]
    far = [reference.estimate('model', rng.normal(3.0, size=256)) for _ in range(20)]
    assert 0.05 < np.mean(shifted) < np.mean(far) <= 1.0 and min(far) > 0.8
    nans = np.concatenate([rng.normal(3.0, size=256), np.full(20, np.nan)])
    assert reference.estimate('model', nans) > 0.8                              # undefined steps are ignored
    reference.save(tmp_path / 'ref.safetensors')
    loaded = mismatch.Reference.load(tmp_path / 'ref.safetensors')
    assert loaded.horizon == 3 and loaded.meta == {'task': 'synthetic'}
    window = rng.normal(1.0, size=64)
    assert loaded.estimate('reward', window) == pytest.approx(reference.estimate('reward', window), abs=1e-6)


def test_binomial_tail_matches_enumeration():
    import itertools
    for n, p in ((1, 0.05), (5, 0.3), (8, 0.03)):
        for k in range(n + 2):
            brute = sum(np.prod([p if x else 1 - p for x in outcome])
                        for outcome in itertools.product((0, 1), repeat=n) if sum(outcome) >= k)
            assert mismatch.binomial_tail(k, n, p) == pytest.approx(brute, abs=1e-12)


def test_failure_excess_reads_zero_at_the_base_rate_and_rises_with_failures():
    rng = np.random.default_rng(1)
    same = [mismatch.failure_excess(rng.random(8) < 0.05, 0.05) for _ in range(2000)]
    assert np.mean(np.array(same) > 0) <= 0.05                      # the test's level bounds false alarms
    assert mismatch.failure_excess([], 0.05) == 0.0
    assert mismatch.failure_excess([1], 0.05) == 0.0                # one failure is no evidence
    assert mismatch.failure_excess([0] * 8, 0.05) == 0.0
    rates = [mismatch.failure_excess([1] * k + [0] * (8 - k), 0.05) for k in range(9)]
    assert rates[1] == 0.0 and all(a <= b for a, b in zip(rates, rates[1:]))
    assert rates[8] == pytest.approx(1.0) and rates[4] == pytest.approx((0.5 - 0.05) / 0.95)


def test_reference_failure_rates_by_mode_survive_saving(tmp_path):
    rng = np.random.default_rng(2)
    reference = synthetic_reference(rng)
    assert reference.failure_rate('actor') is None and reference.estimate_failures([1] * 8, 'actor') == 0.0
    reference.failures = {'actor': np.zeros(39), 'sample': np.array([1.0] * 3 + [0.0] * 36)}
    reference.save(tmp_path / 'ref.safetensors')
    loaded = mismatch.Reference.load(tmp_path / 'ref.safetensors')
    assert loaded.failure_rate('actor') == pytest.approx(0.5 / 40)  # shrunk: a clean reference is not p = 0
    assert loaded.failure_rate('sample') == pytest.approx(3.5 / 40)
    assert loaded.failure_rate('plan') == loaded.failure_rate('actor')
    assert loaded.estimate_failures([1, 1, 0, 0, 0, 0, 0, 0], 'actor') > 0.0
    assert loaded.estimate_failures([1, 1, 0, 0, 0, 0, 0, 0], 'sample') == 0.0   # common for that mode


def test_reference_refuses_other_files(tmp_path):
    from safetensors.torch import save_file
    save_file({'x': torch.zeros(2)}, str(tmp_path / 'other.safetensors'), metadata={'format': 'nope'})
    with pytest.raises(ValueError):
        mismatch.Reference.load(tmp_path / 'other.safetensors')


def tiny_world_model_and_sequence(length=24):
    from adawm_planner.core.presets import load_preset
    from adawm_planner.core.world_model import WorldModel
    torch.manual_seed(0)
    wm = WorldModel(load_preset('tiny'), (64, 64, 5), 9, 15)
    bev = torch.randint(0, 255, (2, length, 64, 64, 5), dtype=torch.uint8)
    ego = torch.randn(2, length, 9)
    action = torch.nn.functional.one_hot(torch.randint(0, 15, (2, length)), 15).float()
    is_first = torch.zeros(2, length, dtype=torch.bool)
    is_first[:, 0] = True
    is_first[1, 10] = True                                  # a second episode starts in sequence 1
    return wm, bev, ego, action, is_first


@torch.no_grad()
def test_open_loop_kl_one_step_is_the_filters_kl_and_undefined_across_starts():
    wm, bev, ego, action, is_first = tiny_world_model_and_sequence()
    posts, priors = wm.observe(bev, ego, action, is_first, generator=torch.Generator().manual_seed(0))
    one = mismatch.open_loop_kl(wm, posts, action, is_first, 1, torch.Generator().manual_seed(1))
    filtered = (posts['logits'].exp() * (posts['logits'] - priors['logits'])).sum((-2, -1))
    defined = torch.isfinite(one)
    assert not defined[:, 0].any() and not defined[1, 10] and defined[1, 11] and defined[0, 10]
    assert torch.allclose(one[defined], filtered[defined], atol=1e-4)
    five = mismatch.open_loop_kl(wm, posts, action, is_first, 5, torch.Generator().manual_seed(1))
    assert torch.isfinite(five).sum() == (24 - 5) + (10 - 5) + (14 - 5)
    assert (five[torch.isfinite(five)] >= 0).all()


def test_reward_scores_negate_and_skip_starts():
    reward = torch.tensor([[0.0, 1.0, 2.0, 0.0, -3.0]])
    is_first = torch.tensor([[True, False, False, True, False]])
    scores = mismatch.reward_scores(reward, is_first)
    assert np.isnan(scores[[0, 3]]).all() and scores[[1, 2, 4]].tolist() == [-1.0, -2.0, 3.0]


def test_reference_written_beside_a_checkpoint_loads_and_is_checked(tiny_checkpoint, tmp_path):
    """The shipped-reference path end to end on the real simulator: episodes of the checkpoint's agent on its
    own task, scored, split, saved beside the weights with their sha256 in model.json; a changed file is refused."""
    import json
    import shutil
    from adawm_planner.core.checkpoint import CheckpointError
    from adawm_planner.experiments import mismatch_reference
    directory = tmp_path / 'ckpt'
    shutil.copytree(tiny_checkpoint, directory)
    with pytest.raises(CheckpointError):
        mismatch.load_reference(directory)
    path = mismatch_reference.write(directory, episodes=4, horizon=2)
    entry = json.loads((directory / 'model.json').read_text())['mismatch_reference']
    assert entry['file'] == path.name and entry['horizon'] == 2 and entry['episodes'] == 4
    reference = mismatch.load_reference(directory)
    assert reference.horizon == 2 and set(reference.cdf) == {'model', 'reward', 'improvement'}
    assert {mode: len(outcomes) for mode, outcomes in reference.failures.items()} == {'actor': 4, 'sample': 4}
    assert 0.0 < reference.failure_rate('sample') < 1.0
    assert len(reference.cdf['model']) > 0 and np.isfinite(reference.cdf['reward']).all()
    # extending an older reference (without the improvement signal) adds it and keeps what it had
    from adawm_planner.core.checkpoint import sha256_file
    older = mismatch.load_reference(directory)
    del older.cdf['improvement'], older.null['improvement']
    older.save(path)
    (directory / 'model.json').write_text(json.dumps({**json.loads((directory / 'model.json').read_text()),
                                                      'mismatch_reference': {**entry, 'sha256': sha256_file(path)}}))
    mismatch_reference.write(directory, extend=True)
    extended = mismatch.load_reference(directory)
    assert set(extended.cdf) == {'model', 'reward', 'improvement'} and extended.horizon == 2
    for part in ('cdf', 'null', 'failures'):
        for signal, values in getattr(older, part).items():
            assert np.array_equal(getattr(extended, part)[signal], values)
    assert np.isfinite(extended.null['improvement']).all() and (extended.null['improvement'] >= 0).all()
    path.write_bytes(path.read_bytes() + b' ')
    with pytest.raises(CheckpointError):
        mismatch.load_reference(directory)


def test_improvement_reads_zero_where_imagination_pays_every_action_alike():
    """The improvement view of ε_π on the tiny agent: one non-negative score per state; 0 when the reward,
    continue and critic heads predict the same for every state (no first action can look better)."""
    from adawm_planner.core.agent import Agent
    from adawm_planner.core.presets import load_preset
    from toy_env import make_toy_env
    torch.manual_seed(0)
    agent = Agent.for_env(load_preset('tiny'), make_toy_env(), 0)
    wm, ac = agent.world_model, agent.actor_critic
    for layer in (wm.reward_head.out, ac.critic.out):
        torch.nn.init.normal_(layer.weight, std=0.5)
    ac.return_hi.fill_(10.0)
    states = {'deter': torch.randn(5, wm.rssm.deter),
              'stoch': torch.nn.functional.one_hot(torch.randint(wm.rssm.classes, (5, wm.rssm.stoch)),
                                                   wm.rssm.classes).float()}
    scores = mismatch.improvement_scores(wm, ac, states, 4, 0.99, particles=3, generator=torch.Generator().manual_seed(1))
    assert scores.shape == (5,) and np.isfinite(scores).all() and (scores >= 0).all() and scores.max() > 0
    for layer in (wm.reward_head.out, wm.cont_head.out, ac.critic.out):   # every state alike: rewards,
        torch.nn.init.zeros_(layer.weight)                                  # episode ends, values
    flat = mismatch.improvement_scores(wm, ac, states, 4, 0.99, particles=3, generator=torch.Generator().manual_seed(1))
    assert np.allclose(flat, 0.0, atol=1e-6)
