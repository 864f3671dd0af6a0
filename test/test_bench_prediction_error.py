"""bench/bench_prediction_error.py: the frozen model's k-step open-loop errors, the known-answer check."""
import numpy as np

from adawm_planner.core.checkpoint import load_checkpoint
from adawm_planner.experiments.mismatch_reference import collect


def test_errors_are_defined_from_step_k_and_the_kl_is_eps_p_score(bench_module, tiny_checkpoint):
    from adawm_planner.core import mismatch
    import torch
    bench = bench_module('bench_prediction_error')
    agent, _ = load_checkpoint(tiny_checkpoint)
    episode = collect(agent, 'right_turn-sparse', 1, 5, max_steps=40)[0]
    out = bench.errors(agent, episode, 3, seed=11)
    length = len(episode['reward'])
    assert {k: len(v) for k, v in out.items()} == {'kl': length - 3, 'ego': length - 3, 'route': length - 3}
    assert all(np.isfinite(v).all() and (v >= 0).all() for v in out.values())
    assert (out['route'] <= out['ego'] + 1e-6).all()          # two of the features' squared errors
    # the KL column is the rule's model score on the same filter draws
    wm = agent.world_model
    batch = {k: torch.as_tensor(v)[None] for k, v in episode.items() if k != 'failed'}
    generator = torch.Generator().manual_seed(11)
    posts, _ = wm.observe(batch['bev'], batch['ego'], batch['action'], batch['is_first'], generator=generator)
    scores = mismatch.model_scores(wm, posts, batch['action'], batch['is_first'], 3, generator)
    assert np.allclose(out['kl'], scores[3:], rtol=1e-5)


def test_the_bench_prints_a_row_per_task(bench_module, tiny_checkpoint, capsys):
    bench_module('bench_prediction_error').main(['--checkpoint', str(tiny_checkpoint), '--tasks', 'right_turn-sparse',
                                                 '--steps', '30', '--horizon', '3'])
    assert capsys.readouterr().out.splitlines()[-1].startswith('| right_turn-sparse |')
