"""The pretraining pipeline on a real embedded task with the tiny preset: it trains, logs, evaluates,
saves a loadable checkpoint, and a seeded run repeats exactly. Also `adawm evaluate`."""
import csv
import json

import torch

from adawm_planner.cli import main
from adawm_planner.core.checkpoint import load_checkpoint
from adawm_planner.core.presets import load_preset
from adawm_planner.experiments.pretrain import pretrain
from adawm_planner.sim import default_task
from toy_env import single_thread  # noqa: F401 (fixture)

METRICS = {'success', 'collision', 'off_route', 'timeout', 'ttc_min', 'ttc_mean', 'route_completion',
           'return', 'length'}


def short_run(out, steps=160):
    preset = load_preset('tiny', prefill=64)
    return pretrain(default_task(), preset, steps, out, seed=3, eval_every=steps, eval_episodes=1,
                    eval_mode='plan', progress=False)


def test_pretrain_trains_logs_evaluates_and_saves(tmp_path):
    agent, metrics = short_run(tmp_path / 'run')
    assert set(metrics) == METRICS
    rows = list(csv.DictReader(open(tmp_path / 'run' / 'scalars.csv')))
    names = {r['name'] for r in rows}
    assert 'train/model_loss' in names and 'train/actor_loss' in names and 'eval_plan/success' in names
    board = tensorboard_events(tmp_path / 'run')   # the same scalars for TensorBoard, and the BEV pictures
    assert {'train/model_loss', 'train/actor_loss', 'eval_plan/success'} <= set(board.Tags()['scalars'])
    assert [e.value for e in board.Scalars('eval_plan/success')] == [metrics['success']]
    assert 'bev/real_over_decoded' in board.Tags()['images']
    loaded, meta = load_checkpoint(tmp_path / 'run' / 'checkpoint')
    assert meta['step'] == 160 and meta['metrics']['eval_plan'] == metrics and meta['updates'] > 0
    assert (tmp_path / 'run' / 'checkpoint' / 'replay.safetensors').is_file()
    for name, tensor in agent.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name


def test_seeded_runs_are_reproducible(tmp_path):
    first, metrics_a = short_run(tmp_path / 'a', steps=120)
    second, metrics_b = short_run(tmp_path / 'b', steps=120)
    assert metrics_a == metrics_b
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[name]), name


def test_evaluate_command_prints_metrics(tmp_path, capsys):
    short_run(tmp_path / 'run', steps=100)
    code = main(['evaluate', '--checkpoint', str(tmp_path / 'run' / 'checkpoint'), '--episodes', '1',
                 '--mode', 'actor', '--json'])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result['task'] == default_task() and METRICS <= set(result)
    assert main(['evaluate', '--checkpoint', str(tmp_path / 'missing')]) == 2   # a refusal: exit 2


def tensorboard_events(directory):
    """TensorBoard's own reader over a run's event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    board = EventAccumulator(str(directory), size_guidance={'images': 0, 'scalars': 0})
    board.Reload()
    return board


def test_evaluation_is_common_random_numbers_and_leaves_training_noise_alone(tmp_path):
    """Episode i of an evaluation runs on the same simulator and agent noise every time: the same agent
    scores the same, and the agent's own generator (training's) is where it was."""
    from adawm_planner.experiments.pretrain import evaluate
    short_run(tmp_path / 'run', steps=100)
    agent, _ = load_checkpoint(tmp_path / 'run' / 'checkpoint')
    before = agent.generator.get_state()
    first = evaluate(agent, default_task(), 2, 'plan')
    assert torch.equal(agent.generator.get_state(), before)
    agent.generator.manual_seed(12345)   # whatever training drew before does not change an evaluation
    assert evaluate(agent, default_task(), 2, 'plan') == first
