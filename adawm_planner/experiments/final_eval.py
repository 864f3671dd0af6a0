"""A finished finetuning run's final agent evaluated again in another mode, e.g. the planner's.

The strategy grid evaluates in actor mode as it trains. A model step repairs only the world model's prior
(core/adaptation.py), which the actor never reads when driving: in actor mode its effect reaches the road
only through later policy steps, while plan mode (the planner node's mode:=plan) searches with the repaired
prior directly. This loads the checkpoint, puts each adapter a run exported onto it, evaluates the same
episodes as the grid (experiments/pretrain.py evaluate) in `mode`, and writes `after_<mode>.json` beside
the run's result.json; report.py adds the column. Runs already evaluated are skipped, so it resumes.

    python -m adawm_planner.experiments.final_eval RUNS_DIR [--mode plan] [--episodes 20]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from adawm_planner.core import lora
from adawm_planner.core.checkpoint import load_checkpoint
from adawm_planner.experiments.pretrain import evaluate
from adawm_planner.sim import make_env as make_task_env


def agent_after(run_dir):
    """(agent, result): the run's checkpoint with the run's exported adapters loaded, seeded as the run (no
    adapter: the pretrained agent; a `full` run exports none and is refused, its weights are not kept)."""
    run_dir = Path(run_dir)
    result = json.loads((run_dir / 'result.json').read_text())
    if result['strategy'] == 'full':
        raise ValueError(f'{run_dir}: a full finetuning run keeps no weights to evaluate again')
    agent, _ = load_checkpoint(result['checkpoint'], seed=result['seed'])
    for side, entry in result.get('adapters', {}).items():
        adapter = lora.load(run_dir / entry['path'], expected_sha256=entry['sha256'])
        module = agent.module(side)
        lora.attach(module, side, adapter.meta.rank, adapter.meta.alpha, list(adapter.meta.target_modules))
        lora.load_into(module, adapter)
    return agent, result


def evaluate_run(run_dir, mode: str, episodes: int, make_env=make_task_env) -> dict:
    run_dir = Path(run_dir)
    out = run_dir / f'after_{mode}.json'
    if out.exists():
        return json.loads(out.read_text())
    agent, result = agent_after(run_dir)
    metrics = {**evaluate(agent, result['task'], episodes, mode, make_env), 'episodes': episodes}
    out.write_text(json.dumps(metrics, indent=2) + '\n')
    return metrics


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('runs', help='an experiment folder (STRATEGY/seedN/result.json below it)')
    parser.add_argument('--mode', default='plan', choices=('plan', 'actor'))
    parser.add_argument('--episodes', type=int, default=20)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for done in sorted(Path(args.runs).glob('*/seed*/result.json')):
        if json.loads(done.read_text())['strategy'] == 'full':
            continue
        metrics = evaluate_run(done.parent, args.mode, args.episodes)
        print(f'{done.parent}: {args.mode} mode success {metrics["success"]:.2f}', flush=True)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
