"""bench/bench_heads_repair.py: the world model trained further with weighted episode ends, heads re-read."""
import torch


def test_weighting_the_ends_changes_only_the_terminal_steps_loss(tiny_checkpoint):
    from adawm_planner.core.checkpoint import load_checkpoint
    agent, _ = load_checkpoint(tiny_checkpoint)
    wm = agent.world_model
    torch.manual_seed(0)
    batch = {'bev': torch.randint(0, 255, (2, 6, *wm.bev_shape), dtype=torch.uint8),
             'ego': torch.randn(2, 6, wm.ego_dim), 'action': torch.zeros(2, 6, agent.action_dim),
             'reward': torch.randn(2, 6), 'is_first': torch.zeros(2, 6, dtype=torch.bool),
             'is_terminal': torch.zeros(2, 6, dtype=torch.bool)}
    batch['is_first'][:, 0] = True
    losses = {}
    for weight in (1.0, 10.0):
        wm.preset = wm.preset.replace(terminal_weight=weight)
        torch.manual_seed(1)
        losses[weight] = wm.loss(batch)[1]
    assert losses[1.0] == losses[10.0]          # no episode end in the batch: the weight changes nothing
    batch['is_terminal'][0, -1] = True
    for weight in (1.0, 10.0):
        wm.preset = wm.preset.replace(terminal_weight=weight)
        torch.manual_seed(1)
        losses[weight] = wm.loss(batch)[1]
    assert losses[10.0]['reward_loss'] > losses[1.0]['reward_loss']
    assert losses[10.0]['bev_loss'] == losses[1.0]['bev_loss']


def test_the_bench_trains_and_reports_per_weight(bench_module, tiny_checkpoint, capsys):
    bench = bench_module('bench_heads_repair')
    assert bench.main(['--checkpoint', str(tiny_checkpoint), '--tasks', 'right_turn-sparse', '--episodes', '1',
                       '--heldout', '1', '--weights', '1', '5', '--updates', '2', '--every', '1']) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(',')[0].strip() for line in lines[3:]] == ['W 1', 'W 1', 'W 5', 'W 5']
    assert lines[2].split()[0] == 'before' and len(lines[2].split()) == 7
