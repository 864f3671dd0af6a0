"""Scaling out on Ray (experiments/scale.py) on a local Ray instance: 2 CPUs, loopback only, no dashboard.
The strategy grid as Ray tasks gives the serial table, survives a killed worker (retried once) and keeps
every finished run when a run fails twice; pretraining with 2 simulator collectors trains and saves."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from adawm_planner.cli import main
from adawm_planner.core.adaptation import FinetuneConfig
from adawm_planner.core.checkpoint import load_checkpoint
from adawm_planner.core.presets import load_preset
from adawm_planner.experiments.finetune import experiment
from adawm_planner.experiments.scale import GridError, init_ray
from test_finetune import toy_checkpoint  # noqa: F401 (fixture)
from test_training import tensorboard_events
from toy_env import make_toy_env, single_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.timeout(600)
TEST_DIR = str(Path(__file__).parent)
GRID = dict(steps=48, eval_every=24, eval_episodes=2, config=FinetuneConfig(window=8, train_every=8), progress=False)


@pytest.fixture(scope='module')
def ray_cluster():
    with pytest.MonkeyPatch.context() as patch:
        # Ray workers are fresh processes: they find toy_env (and this module's env factory) on PYTHONPATH.
        patch.setenv('PYTHONPATH', os.pathsep.join(filter(None, [TEST_DIR, os.environ.get('PYTHONPATH')])))
        ray = init_ray(num_cpus=2)
        assert {node['NodeManagerAddress'] for node in ray.nodes()} == {'127.0.0.1'}   # loopback only
        yield ray
        ray.shutdown()


class KillingToyEnv:
    """make_env for the toy task whose training env of seed `seed` kills its own process (SIGKILL, as an
    OOM kill or a lost machine would) at its 10th step, the first `times` times such an env is made; each
    time is claimed by creating a file in `marks`, so that concurrent workers agree."""

    def __init__(self, seed, marks, times):
        self.seed, self.marks, self.times = seed, Path(marks), times

    def __call__(self, task='toy', seed=None, continuous=False):
        env = make_toy_env(task, seed)
        if seed == self.seed and self._claim():
            step = env.step

            def step_then_die(action):
                if env.t == 9:
                    os.kill(os.getpid(), signal.SIGKILL)
                return step(action)
            env.step = step_then_die
        return env

    def _claim(self):
        for n in range(self.times):
            try:
                os.close(os.open(self.marks / str(n), os.O_CREAT | os.O_EXCL))
                return True
            except FileExistsError:
                continue
        return False


def test_grid_on_ray_matches_serial_and_retries_a_killed_worker(ray_cluster, toy_checkpoint, tmp_path, capfd):
    strategies = ('none', 'adawm')
    serial = experiment(toy_checkpoint, 'toy', 'toy', tmp_path / 'serial', 2, strategies,
                        make_env=make_toy_env, **GRID)
    (tmp_path / 'marks').mkdir()
    killer = KillingToyEnv(seed=1, marks=tmp_path / 'marks', times=1)
    on_ray = experiment(toy_checkpoint, 'toy', 'toy', tmp_path / 'ray', 2, strategies, make_env=killer,
                        workers=2, **GRID)
    assert len(list((tmp_path / 'marks').iterdir())) == 1   # one worker was killed ...
    err = capfd.readouterr().err
    assert 'seed1: WorkerCrashedError' in err and 'retrying once' in err   # ... reported, and retried
    assert [(r['strategy'], r['seed']) for r in on_ray] == [(r['strategy'], r['seed']) for r in serial]
    # One torch thread and seeded runs: a run in a Ray worker is the run of the serial loop, bit for bit.
    for r in serial:
        run = f'{r["strategy"]}/seed{r["seed"]}/result.json'
        a, b = (json.loads((tmp_path / side / run).read_text()) for side in ('serial', 'ray'))
        for adapter in [*a['adapters'].values(), *b['adapters'].values()]:
            # safetensors writes the metadata keys in hash order, so an export's bytes (and sha256) differ
            # between two serial runs too; its tensors and metadata do not:
            del adapter['sha256']
        assert a == {**b, 'wall_s': a['wall_s']}, run
    for name in ('model', 'policy'):
        serial_adapter, ray_adapter = (load_file(tmp_path / side / f'adawm/seed1/{name}_adapter.safetensors')
                                       for side in ('serial', 'ray'))
        assert serial_adapter.keys() == ray_adapter.keys()
        assert all(torch.equal(serial_adapter[k], ray_adapter[k]) for k in serial_adapter), name
    assert (tmp_path / 'ray/table.md').read_text() == (tmp_path / 'serial/table.md').read_text()
    for name in ('table.csv', 'learning_curves.png', 'mismatch.png', 'adawm/seed1/model_adapter.safetensors',
                 'adawm/seed1/trace.csv', 'none/seed0/curve.csv'):
        assert (tmp_path / 'ray' / name).stat().st_size > 0, name
    board = tensorboard_events(tmp_path / 'ray/adawm/seed0')   # event files came back with the folder
    assert len(board.Scalars('mismatch/eps_model')) == 6


def test_a_run_failing_twice_keeps_the_finished_runs(ray_cluster, toy_checkpoint, tmp_path, capfd):
    (tmp_path / 'marks').mkdir()
    killer = KillingToyEnv(seed=1, marks=tmp_path / 'marks', times=2)
    with pytest.raises(GridError, match=r'none/seed1 \(WorkerCrashedError'):
        experiment(toy_checkpoint, 'toy', 'toy', tmp_path, 3, ('none',), make_env=killer, workers=2, **GRID)
    assert 'none/seed1: failed again' in capfd.readouterr().err
    finished = [tmp_path / f'none/seed{n}/result.json' for n in (0, 2)]
    assert all(f.exists() for f in finished) and not (tmp_path / 'none/seed1').exists()
    assert not (tmp_path / 'table.md').exists()
    stamps = [f.stat().st_mtime_ns for f in finished]
    again = experiment(toy_checkpoint, 'toy', 'toy', tmp_path, 3, ('none',), make_env=make_toy_env, workers=2,
                       **GRID)   # only the missing run is run
    assert [f.stat().st_mtime_ns for f in finished] == stamps
    assert [r['seed'] for r in again] == [0, 1, 2] and (tmp_path / 'table.md').exists()


def test_pretrain_with_two_collectors(ray_cluster, tmp_path, capsys):
    out = tmp_path / 'run'
    steps, preset = 160, load_preset('tiny')
    code = main(['pretrain', '--preset', 'tiny', '--steps', str(steps), '--eval-every', str(steps),
                 '--eval-episodes', '1', '--out', str(out), '--no-progress', '--collectors', '2'])
    assert code == 0 and 'checkpoint:' in capsys.readouterr().out
    agent, meta = load_checkpoint(out / 'checkpoint')
    per_step = preset.train_ratio / (preset.batch * preset.seq_len)
    assert meta['step'] == steps and meta['collectors'] == 2
    assert meta['updates'] == int((steps - preset.prefill) * per_step)   # the train ratio, held
    board = tensorboard_events(out)
    tags = set(board.Tags()['scalars'])
    assert {'train/model_loss', 'episode/return', 'eval_actor/success', 'throughput/env_steps_per_s',
            'throughput/updates_per_s', 'throughput/learner_busy'} <= tags
    assert board.Scalars('throughput/updates_per_s')[-1].value > 0


def test_without_ray_flags_ray_is_not_imported():
    code = ('import sys; from adawm_planner.cli import main; from adawm_planner.experiments import finetune, '
            'pretrain, scale, finetune_cli, pretrain_cli; '
            'assert main(["experiment", "--pair", "no_such_pair"]) == 2; '
            'assert "ray" not in sys.modules, "ray imported"')
    subprocess.run([sys.executable, '-c', code], check=True, timeout=120)
