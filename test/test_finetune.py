"""A finetuning experiment end to end on the toy task: runs, files, resumption."""
import json

import pytest
import torch

from adawm_planner.core.adaptation import FinetuneConfig
from adawm_planner.core.presets import load_preset
from adawm_planner.core import lora
from adawm_planner.experiments.final_eval import agent_after, evaluate_run
from adawm_planner.experiments.finetune import experiment
from adawm_planner.experiments.pretrain import pretrain
from test_training import tensorboard_events
from toy_env import make_toy_env


@pytest.fixture(scope='module')
def toy_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp('pretrain')
    pretrain('toy', load_preset('tiny'), steps=200, out_dir=out, eval_every=200, eval_episodes=2,
             progress=False, make_env=make_toy_env)
    return out / 'checkpoint'


def test_experiment_writes_table_curves_and_resumes(toy_checkpoint, tmp_path):
    kwargs = dict(seeds=2, strategies=('none', 'adawm', 'full'), steps=48, make_env=make_toy_env, progress=False,
                  eval_every=24, eval_episodes=2, config=FinetuneConfig(window=8, train_every=8))
    results = experiment(toy_checkpoint, 'toy', 'toy', tmp_path, **kwargs)
    assert len(results) == 6
    for r in results:
        assert r['finetune_steps'] == 6 and sum(r['decisions'].values()) == 6
        assert 0.0 <= r['after']['success'] <= 1.0
    adawm = [r for r in results if r['strategy'] == 'adawm'][0]
    assert set(adawm['adapters']) == {'model', 'policy'}
    assert (tmp_path / 'adawm/seed0' / adawm['adapters']['model']['path']).exists()
    table = (tmp_path / 'table.md').read_text()
    assert '| adawm | 2 |' in table and '| full | 2 |' in table
    for name in ('table.csv', 'learning_curves.png', 'mismatch.png'):
        assert (tmp_path / name).stat().st_size > 0

    # a second call finds every run finished and only rewrites the report
    stamp = (tmp_path / 'none/seed1/result.json').stat().st_mtime_ns
    again = experiment(toy_checkpoint, 'toy', 'toy', tmp_path, **kwargs)
    assert (tmp_path / 'none/seed1/result.json').stat().st_mtime_ns == stamp
    assert [r['wall_s'] for r in again] == [r['wall_s'] for r in results]
    trace = (tmp_path / 'adawm/seed0/trace.csv').read_text().splitlines()
    assert trace[0].startswith('finetune_step,env_step,eps_model,eps_policy') and len(trace) == 7
    assert json.loads((tmp_path / 'adawm/seed0/result.json').read_text())['strategy'] == 'adawm'
    board = tensorboard_events(tmp_path / 'adawm/seed0')
    assert {'eval/success', 'mismatch/eps_model', 'mismatch/eps_policy'} <= set(board.Tags()['scalars'])
    assert len(board.Scalars('mismatch/eps_model')) == 6 and 'bev/real_over_decoded' in board.Tags()['images']

    # the final agent evaluated again in plan mode: the run's own adapters on the checkpoint, a report column
    agent, _ = agent_after(tmp_path / 'adawm/seed0')
    exported = lora.load(tmp_path / 'adawm/seed0' / adawm['adapters']['model']['path'])
    loaded = lora.adapter_tensors(agent.module('model'), 'model')
    assert loaded.keys() == exported.tensors.keys()
    assert all(torch.equal(loaded[k], exported.tensors[k]) for k in loaded)
    plan = evaluate_run(tmp_path / 'adawm/seed0', 'plan', 2, make_env=make_toy_env)
    assert json.loads((tmp_path / 'adawm/seed0/after_plan.json').read_text()) == plan
    experiment(toy_checkpoint, 'toy', 'toy', tmp_path, **kwargs)
    assert f'| {plan["success"]:.2f} (1) |' in (tmp_path / 'table.md').read_text().splitlines()[6]

    # a later seed alone (the earlier ones run elsewhere): only it runs, beside what is there
    later = experiment(toy_checkpoint, 'toy', 'toy', tmp_path, **{**kwargs, 'seeds': 3, 'strategies': ('none',)},
                       first_seed=2)
    assert [r['seed'] for r in later] == [2] and (tmp_path / 'none/seed2/result.json').exists()


def test_runs_read_the_episodes_outcomes_against_the_reference(toy_checkpoint, tmp_path):
    """With a mismatch reference the run feeds its finished episodes' outcomes to the episode-level ε_π,
    which the trace carries."""
    import csv
    import shutil
    from adawm_planner.experiments import mismatch_reference
    from adawm_planner.experiments.finetune import finetune
    checkpoint = tmp_path / 'ckpt'
    shutil.copytree(toy_checkpoint, checkpoint)
    mismatch_reference.write(checkpoint, episodes=6, horizon=2, make_env=make_toy_env)
    finetune(checkpoint, 'toy', 64, tmp_path / 'run', config=FinetuneConfig(window=8, train_every=8),
             make_env=make_toy_env, progress=False, eval_every=64, eval_episodes=1)
    with open(tmp_path / 'run/trace.csv') as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8   # a step every 8 of the 64 env steps
    assert all(0.0 <= float(row['eps_policy_episodes']) <= 1.0 for row in rows)


def test_experiment_takes_any_pair_with_task_overrides(tiny_checkpoint, tmp_path, capsys):
    """`adawm experiment --from/--to` with a changed field: the run drives the overridden task and says so."""
    import json
    from adawm_planner.cli import main
    out = tmp_path / 'grid'
    to = 'right_turn-moderate@lag=0.3,traffic.spawn_rate=1.0'
    assert main(['experiment', '--from', 'right_turn-moderate', '--to', to, '--checkpoint', str(tiny_checkpoint),
                 '--seeds', '1', '--strategies', 'policy', '--steps', '16', '--eval-every', '16',
                 '--eval-episodes', '1', '--train-every', '8', '--window', '8', '--out', str(out)]) == 0
    result = json.loads((out / 'policy/seed0/result.json').read_text())
    assert result['task'] == to and result['steps'] == 16
    assert '| policy | 1 |' in capsys.readouterr().out
