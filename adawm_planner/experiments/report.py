"""The strategy table of one shift pair, from every finished run in its folder.

Reads `STRATEGY/seedN/result.json` and `curve.csv` (so a grid run in several processes, or with different
seed counts per strategy, reports everything that has finished) and writes table.md, table.csv,
learning_curves.png and mismatch.png. Figures per strategy, over its seeds: final success, area under the
success curve (mean success over the run's evaluation points, trapezoidal in environment steps, so 1.0 =
succeeding at every point), collision rate and return, each as the mean with a 95 % Student-t interval
over seeds; and for AdaWM the share of finetuning steps that went to the world model.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

# two-sided 95 % quantiles of Student's t, by degrees of freedom (1..30); beyond 30 the normal's 1.96 is
# within 4 % of them
T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
       2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
       2.045, 2.042]
METRICS = [('success', 'final success'), ('auc', 'success AUC'), ('collision', 'collision rate'),
           ('return', 'return')]


def interval(values) -> tuple[float, float]:
    """Mean and the half-width of its 95 % t interval over the values (seeds); half-width NaN for one."""
    values = np.asarray(values, np.float64)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, float('nan')
    t = T95[len(values) - 2] if len(values) - 1 <= len(T95) else 1.96
    return mean, float(t * values.std(ddof=1) / math.sqrt(len(values)))


def difference(a, b) -> tuple[float, float]:
    """Mean of a minus mean of b and the half-width of its 95 % Welch interval (NaN with < 2 of either)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return diff, float('nan')
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb == 0:
        return diff, 0.0
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    t = T95[max(int(df), 1) - 1] if df <= len(T95) else 1.96   # floor(df): the wider, conservative quantile
    return diff, float(t * math.sqrt(va + vb))


def verdict(diff: float, half: float) -> str:
    """'win' / 'loss' when the 95 % interval of the difference excludes 0, else 'tie' ('?' without one)."""
    if math.isnan(half):
        return '?'
    return 'win' if diff - half > 0 else 'loss' if diff + half < 0 else 'tie'


def read_csv(path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def success_auc(curve: list[dict]) -> float:
    """Mean success over the run: trapezoidal area under success vs environment steps, over the span."""
    x = np.array([float(c['env_step']) for c in curve])
    y = np.array([float(c['success']) for c in curve])
    if len(x) < 2 or x[-1] <= x[0]:
        return float(y.mean())
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)) / (x[-1] - x[0]))


def finished_runs(out_dir) -> list[dict]:
    """Every finished run under out_dir, each result.json with its curve and its AUC added."""
    runs = []
    for done in sorted(Path(out_dir).glob('*/seed*/result.json')):
        result = json.loads(done.read_text())
        result['curve'] = read_csv(done.parent / 'curve.csv')
        result['auc'] = success_auc(result['curve'])
        result['dir'] = done.parent
        result['model_steps'] = result['decisions']['model'] + result['decisions']['both']
        plan = done.parent / 'after_plan.json'   # experiments/final_eval.py
        result['success_plan'] = json.loads(plan.read_text())['success'] if plan.exists() else None
        runs.append(result)
    return runs


def model_share(result) -> float:
    """Share of a run's finetuning steps that updated the world model (finished_runs, published_runs)."""
    return result['model_steps'] / result['finetune_steps'] if result['finetune_steps'] else float('nan')


def decisions_of(run_dir) -> np.ndarray:
    """A run's decision at each finetuning step, in order (trace.csv)."""
    return np.array([row['decision'] for row in read_csv(Path(run_dir) / 'trace.csv')])


def known_side_shares(decisions: np.ndarray, side: str, parts: int = 4, updates_only: bool = False) -> list[float]:
    """Share of an AdaWM run's finetuning steps (decisions_of) that updated `side`, in each of `parts` equal
    spans of its steps: whether the rule holds to the right side, and when it leaves it. With
    `updates_only`, of the steps that updated a side (the rule's 'none' left out)."""
    if updates_only:
        decisions = decisions[decisions != 'none']
    spans = np.array_split(decisions, parts)
    return [float(np.mean((span == side) | (span == 'both'))) if len(span) else float('nan') for span in spans]


def by_strategy(runs: list[dict]) -> list[dict]:
    """Runs in strategy then seed order: the order of the table's rows and the summary's columns."""
    return sorted(runs, key=lambda r: (r['strategy'], r['seed']))


def summarise(runs: list[dict]) -> list[dict]:
    """One row per strategy (in the order the strategies first appear), its figures over seeds."""
    rows = []
    for strategy in dict.fromkeys(r['strategy'] for r in runs):
        mine = [r for r in runs if r['strategy'] == strategy]
        row = {'strategy': strategy, 'seeds': len(mine), 'steps': mine[0]['steps'],
               'success_before': float(np.mean([r['before']['success'] for r in mine]))}
        for key, _ in METRICS:
            values = [r['auc'] if key == 'auc' else r['after'][key] for r in mine]
            row[f'{key}_mean'], row[f'{key}_ci95'] = interval(values)
        plan = [r['success_plan'] for r in mine if r['success_plan'] is not None]
        row['success_plan_seeds'] = len(plan)
        row['success_plan_mean'], row['success_plan_ci95'] = interval(plan) if plan else (float('nan'),) * 2
        shares = [model_share(r) for r in mine]
        row['model_share_mean'] = float(np.mean(shares))
        row['model_share_min'], row['model_share_max'] = float(np.min(shares)), float(np.max(shares))
        rows.append(row)
    return rows


def write_report(out_dir, pretrain_task, finetune_task, earlier: list[dict] = ()) -> list[dict]:
    """table.md, table.csv, learning_curves.png, mismatch.png from every finished run; returns the rows.
    `earlier`: more runs of the pair as published_runs gives them (seeds published before whose folders are
    gone): in the table, not in the plots, which need the curves and traces."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    runs = finished_runs(out_dir)
    if not runs:
        return []
    rows = summarise(by_strategy(runs + list(earlier)))
    with open(out_dir / 'table.csv', 'w', newline='') as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    def cell(row, key):
        half = row[f'{key}_ci95']
        digits = 1 if key == 'return' else 2
        return f'{row[f"{key}_mean"]:.{digits}f}' + ('' if math.isnan(half) else f' ± {half:.{digits}f}')
    lines = [f'# {pretrain_task} → {finetune_task}', '',
             f'Mean ± 95 % t-interval half-width over seeds; {rows[0]["steps"]} environment steps per run.', '',
             '| strategy | seeds | success before | ' + ' | '.join(label for _, label in METRICS) +
             ' | model-step share | final success, plan mode (seeds) |', '|' + '---|' * (len(METRICS) + 5)]
    for row in rows:
        share = (f'{row["model_share_mean"]:.2f} ({row["model_share_min"]:.2f}–{row["model_share_max"]:.2f})'
                 if not math.isnan(row['model_share_mean']) else '—')
        plan = f'{cell(row, "success_plan")} ({row["success_plan_seeds"]})' if row['success_plan_seeds'] else '—'
        lines.append(f'| {row["strategy"]} | {row["seeds"]} | {row["success_before"]:.2f} | ' +
                     ' | '.join(cell(row, k) for k, _ in METRICS) + f' | {share} | {plan} |')
    (out_dir / 'table.md').write_text('\n'.join(lines) + '\n')

    fig, ax = plt.subplots(figsize=(7, 4))
    for row in rows:
        curves = [r['curve'] for r in runs if r['strategy'] == row['strategy']]
        if not curves:
            continue
        length = min(len(c) for c in curves)
        x = [float(c['env_step']) for c in curves[0][:length]]
        y = np.array([[float(c['success']) for c in curve[:length]] for curve in curves])
        mean, half = zip(*(interval(column) for column in y.T))
        mean, half = np.array(mean), np.nan_to_num(np.array(half))
        ax.plot(x, mean, label=f'{row["strategy"]} ({len(curves)})')
        ax.fill_between(x, mean - half, mean + half, alpha=0.12)
    ax.set(xlabel='environment steps on the new task', ylabel='success rate (band: 95 % interval)',
           title=f'{pretrain_task} → {finetune_task}')
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / 'learning_curves.png', dpi=100)
    plt.close(fig)

    shown = [r for s in ('model', 'policy', 'adawm') for r in runs if r['strategy'] == s and r['seed'] == 0]
    if shown:
        fig, axes = plt.subplots(1, len(shown), figsize=(4 * len(shown), 3.2), sharey=True, squeeze=False)
        for ax, run in zip(axes[0], shown):
            trace = read_csv(run['dir'] / 'trace.csv')
            x = [int(t['finetune_step']) for t in trace]
            ax.plot(x, [float(t['eps_model']) for t in trace], label='ε_P (model)')
            ax.plot(x, [float(t['eps_policy']) for t in trace], label='ε_π (policy)')
            if trace and trace[0].get('eps_policy_episodes'):   # runs from before the episode-level term lack it
                ax.plot(x, [float(t['eps_policy_episodes']) for t in trace], ':', label='ε_π, episodes')
            ax.set(title=f'{run["strategy"]} finetuning, seed 0', xlabel='finetuning step')
        axes[0][0].set_ylabel('mismatch estimate')
        axes[0][0].legend()
        fig.tight_layout()
        fig.savefig(out_dir / 'mismatch.png', dpi=100)
        plt.close(fig)
    return rows


def versus(runs: list[dict], key: str, ours: str = 'adawm') -> list[dict]:
    """AdaWM against every other strategy of one pair on `key` ('success', 'auc' or 'success_plan')."""
    def values(strategy):
        picked = [r['auc'] if key == 'auc' else r['after']['success'] if key == 'success' else r[key]
                  for r in runs if r['strategy'] == strategy]
        return [v for v in picked if v is not None]
    mine, rows = values(ours), []
    for other in dict.fromkeys(r['strategy'] for r in runs):
        theirs = values(other)
        if other == ours or not mine or not theirs:
            continue
        diff, half = difference(mine, theirs)
        rows.append({'other': other, 'diff': diff, 'half': half, 'verdict': verdict(diff, half),
                     'seeds': (len(mine), len(theirs))})
    return rows


def known_side_lines(summary: Path) -> dict[str, str]:
    """The known-answer table's line per pair in an earlier summary.md (the shares need the runs' traces)."""
    if not summary.exists():
        return {}
    text = summary.read_text()
    section = text[text.find("## AdaWM's choices"):] if "## AdaWM's choices" in text else ''
    return {line.split('|')[1].strip(): line for line in section.splitlines()
            if line.startswith('| ') and not line.startswith('| pair ')}


def write_summary(runs_by_pair: dict[str, list[dict]], docs_root: Path) -> None:
    """docs_root/summary.md: per pair, AdaWM minus each other strategy (final success, success AUC, final
    success in plan mode) with its 95 % Welch interval and the verdict it supports."""
    lines = ['# AdaWM against each other strategy, per pair', '',
             'AdaWM\'s mean minus the other strategy\'s, ± the half-width of the 95 % Welch interval of the '
             'difference over seeds (seeds AdaWM/other); **win** or **loss** when that interval excludes 0, tie '
             'otherwise. Written by `python -m adawm_planner.experiments.report` from the runs in runs.csv.', '']
    for key, label in (('success', 'final success (actor mode)'), ('auc', 'success AUC (actor mode)'),
                       ('success_plan', 'final success, plan mode')):
        table = {}
        for pair, runs in runs_by_pair.items():
            table[pair] = {r['other']: r for r in versus(runs, key)}
        others = list(dict.fromkeys(o for rows in table.values() for o in rows))
        if not others:
            continue
        lines += [f'## {label}', '', '| pair | ' + ' | '.join(f'vs {o}' for o in others) + ' |',
                  '|' + '---|' * (len(others) + 1)]
        for pair, rows in table.items():
            cells = []
            for o in others:
                r = rows.get(o)
                if r is None:
                    cells.append('—')
                    continue
                mark = f'**{r["verdict"]}**' if r['verdict'] in ('win', 'loss') else r['verdict']
                cells.append(f'{r["diff"]:+.2f} ± {r["half"]:.2f} ({r["seeds"][0]}/{r["seeds"][1]}) {mark}')
            lines.append(f'| {pair} | ' + ' | '.join(cells) + ' |')
        lines.append('')
    lines += ['## AdaWM\'s choices on the known-answer pairs', '',
              'Share of AdaWM\'s finetuning steps that updated the side the pair is built to need (the '
              'oracle\'s), over the whole run (mean, min–max over seeds) and in each quarter of its steps '
              '(mean); and of the steps that updated a side at all (the rule updates neither where both '
              'mismatches read 0). The issue\'s criterion: ≥ 0.80 over the run.', '',
              '| pair | known side | seeds | share over the run | by quarter | of the steps that updated |',
              '|---|---|---|---|---|---|']
    carried = known_side_lines(docs_root / 'summary.md')
    for pair, runs in runs_by_pair.items():
        if not any('dir' in r for r in runs):   # published earlier, folders gone: its line as it was
            if pair in carried:
                lines.append(carried[pair])
            continue
        mine = [r for r in runs if r['strategy'] == 'adawm' and 'dir' in r
                and r['config'].get('known_side') in ('model', 'policy')]
        if not mine:
            continue
        side = mine[0]['config']['known_side']
        decisions = [decisions_of(r['dir']) for r in mine]
        quarters = np.array([known_side_shares(d, side) for d in decisions])
        whole = [known_side_shares(d, side, parts=1)[0] for d in decisions]
        updated = [known_side_shares(d, side, parts=1, updates_only=True)[0] for d in decisions]
        lines.append(f'| {pair} | {side} | {len(mine)} | {np.mean(whole):.2f} ({np.min(whole):.2f}–'
                     f'{np.max(whole):.2f}) | ' + ' / '.join(f'{q:.2f}' for q in quarters.mean(0)) +
                     f' | {np.nanmean(updated):.2f} |')
    lines.append('')
    (docs_root / 'summary.md').write_text('\n'.join(lines))


RUN_FIELDS = ['pair', 'task', 'strategy', 'seed', 'threshold_c', 'steps', 'success_before', 'success_after',
              'success_auc', 'collision_after', 'return_after', 'model_steps', 'policy_steps', 'finetune_steps',
              'success_plan', 'wall_s']


def published_runs(docs_root: Path, present: dict[str, set]) -> tuple[list[dict], dict[str, list[dict]]]:
    """The rows of docs_root/runs.csv of every run not under the runs root being published (`present`: pair
    -> its (strategy, seed) there), and per pair those runs as far as summarise() and versus() need them:
    runs published earlier whose folders are gone (another machine, a wiped runs/) stay in the record, in
    their pair's table and in the summary, and new seeds of a pair join them."""
    path = docs_root / 'runs.csv'
    rows = [r for r in read_csv(path) if (r['strategy'], int(r['seed'])) not in present.get(r['pair'], ())
            ] if path.exists() else []
    runs_by_pair = {}
    for r in rows:
        runs_by_pair.setdefault(r['pair'], []).append(
            {'strategy': r['strategy'], 'seed': int(r['seed']), 'steps': int(r['steps']),
             'before': {'success': float(r['success_before'])},
             'after': {'success': float(r['success_after']), 'collision': float(r['collision_after']),
                       'return': float(r['return_after'])},
             'auc': float(r['success_auc']), 'success_plan': float(r['success_plan']) if r['success_plan'] else None,
             'model_steps': int(r['model_steps']), 'finetune_steps': int(r['finetune_steps'])})
    return rows, runs_by_pair


def publish(runs_root, docs_root) -> None:
    """Each experiment folder under runs_root (one per pair, or per pair and C) reported again, its table and
    plots copied to docs_root/<folder>/, and every run as a row of docs_root/runs.csv: the committed record
    of a grid that is still running. Runs already in that record but not under runs_root keep their rows
    and count in their pair's table and summary lines (a pair's later seeds can be run on a machine that
    has only its record)."""
    import shutil
    runs_root, docs_root = Path(runs_root), Path(docs_root)
    folders = {p.name: finished_runs(p) for p in sorted(runs_root.iterdir()) if p.is_dir()}
    folders = {name: runs for name, runs in folders.items() if runs}
    kept, earlier = published_runs(docs_root, {name: {(r['strategy'], r['seed']) for r in runs}
                                                for name, runs in folders.items()})
    every, runs_by_pair = [], dict(earlier)
    for name, runs in folders.items():
        folder = runs_root / name
        write_report(folder, runs[0].get('pretrain_task'), runs[0]['task'], earlier.get(name, ()))
        runs_by_pair[name] = by_strategy(runs + earlier.get(name, []))
        (docs_root / name).mkdir(parents=True, exist_ok=True)
        for file in ('table.md', 'table.csv', 'learning_curves.png', 'mismatch.png'):
            if (folder / file).exists():
                shutil.copyfile(folder / file, docs_root / name / file)
        for r in runs:
            d = r['decisions']
            every.append({'pair': name, 'task': r['task'], 'strategy': r['strategy'], 'seed': r['seed'],
                          'threshold_c': r['config'].get('threshold_c'), 'steps': r['steps'],
                          'success_before': r['before']['success'], 'success_after': r['after']['success'],
                          'success_auc': round(r['auc'], 4), 'collision_after': r['after']['collision'],
                          'return_after': round(r['after']['return'], 2), 'model_steps': r['model_steps'],
                          'policy_steps': d['policy'] + d['both'], 'finetune_steps': r['finetune_steps'],
                          'success_plan': r['success_plan'], 'wall_s': r['wall_s']})
    with open(docs_root / 'runs.csv', 'w', newline='') as f:
        writer = csv.DictWriter(f, RUN_FIELDS)
        writer.writeheader()
        writer.writerows(sorted(kept + every, key=lambda r: (r['pair'], r['strategy'], int(r['seed']))))
    write_summary(dict(sorted(runs_by_pair.items())), docs_root)


if __name__ == '__main__':
    import sys
    if len(sys.argv) != 3:
        sys.exit('usage: python -m adawm_planner.experiments.report RUNS_ROOT DOCS_ROOT')
    publish(sys.argv[1], sys.argv[2])
