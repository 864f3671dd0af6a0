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
    (0.00, 0.00, 2.0, 'policy'),
])
def test_decision_rule_follows_the_inequality(eps_p, eps_pi, c, expected):
    assert mismatch.decide(eps_p, eps_pi, c) == expected


def test_decision_rule_refuses_non_positive_c():
    with pytest.raises(ValueError):
        mismatch.decide(0.1, 0.1, 0.0)
