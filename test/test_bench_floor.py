"""bench/bench_floor.py: arithmetic against the rate this core can do, per workload of the learning core."""
import torch


def test_the_benchs_imagination_step_is_the_planners(bench_module):
    from adawm_planner.core import planner
    from adawm_planner.core.agent import Agent
    from adawm_planner.core.presets import load_preset
    bench = bench_module('bench_floor')
    agent = Agent(load_preset('tiny'), bench.BEV, bench.EGO, bench.ACTIONS, seed=0)
    wm, ac = agent.world_model, agent.actor_critic
    rssm, k, h = wm.rssm, 8, 4
    start = {'deter': torch.randn(1, rssm.deter),
             'stoch': torch.nn.functional.one_hot(torch.randint(0, rssm.classes, (1, rssm.stoch)), rssm.classes).float()}
    noise = planner.draw_noise(k, h, bench.ACTIONS, rssm, True, agent.generator)
    with torch.inference_mode():
        rollout = planner.Rollout(wm, ac, start, noise)
        offsets = torch.arange(rssm.stoch) * rssm.classes
        step = bench.imagination_step(wm, ac, rollout.heads, offsets)
        columns, deter = rollout.columns, rollout.deter
        for t in range(h):
            rollout.step()
            index, _, reward, cont, deter, columns = step(columns, deter, noise[0][t], noise[1][t])
            same = rollout.steps['actions'][t][1:] == index[1:]   # the planner's candidate 0 takes the actor's mode
            assert same.all()
            rewards = reward
    # candidate 0 may differ (the planner gives it the actor's mode); the others took the same draws throughout
    assert torch.allclose(rollout.deter[1:], deter[1:]) and torch.equal(rollout.columns[1:], columns[1:])
    with torch.inference_mode():
        assert torch.allclose(rollout.result()['rewards'][1:, -1], rewards[1:])   # the last step's, batched


def test_the_bench_counts_and_times_every_workload(bench_module, capsys):
    bench = bench_module('bench_floor')
    assert bench.main(['--preset', 'tiny', '--repeats', '1', '--skip-compile']) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    rows = [line for line in lines if line.startswith(('| world-model', '| actor-critic', '| convolutions', '| lookahead'))]
    assert len(rows) == 4
    for row in rows:
        gflop, ms, rate = (float(c) for c in row.split('|')[2:5])
        assert gflop > 0 and ms > 0 and rate > 0
    layers = [line for line in lines if line.startswith(('| encoder', '| decoder'))]
    assert len(layers) == 8   # tiny: four stride-2 convolutions down to 4×4 and four back up
    assert all(float(row.split('|')[4]) > 0 and float(row.split('|')[6]) > 0 for row in layers)
    share = float(out.split('convolutions / world-model step: ')[1].split()[0])
    assert 0 < share < 1.5   # thread CPU time of two separate calls: a ratio, not a bound
