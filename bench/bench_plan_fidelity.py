"""Does the world model rank plans as the task does, before and after a model-side repair?

Plan mode picks, among candidate action sequences, the one imagination scores best. That choice is only as
good as imagination's *ranking* of the candidates, which a one-step (or k-step) prediction error does not
measure. Here the ranking is checked against the simulator itself: at states of the new task, each
candidate's H actions are also driven open loop in copies of the environment (the traffic reacting), and
its true discounted H-step return is compared with the return imagination gives it.

1. The frozen pretrained agent drives `--steps` steps of the pair's new task with sampled actions (the
   finetuning runs' exploration; seeds 20000+), and two repairs train `--updates` steps on them: `prior
   head`, AdaWM's model step (`Finetuner(strategy='model')`, FinetuneConfig defaults: LoRA on the prior
   head, the one-step dynamics KL), and `open loop` (LoRA of the same rank and rate on the whole imagination
   step — input layer, GRU, prior head — trained on H-step open-loop predictions; open_loop_repair).
2. The pretrained agent drives actor-mode episodes of the task (the evaluation seeds 10000+); every
   `--every` steps, K candidates are drawn as the planner draws them (one round from the pretrained model,
   candidate 0 the actor's mode), driven in the simulator, and imagined open loop by each model from the
   pretrained filter's state, under the same `--particles` prior draws (their mean).
Per model: the rank correlation (Spearman) between imagined and true H-step returns over the candidates,
the mean absolute error of the imagined return, and what picking by imagination earns in truth: the true
return of the candidate the model scores best (H-step rewards alone, and the planner's full score with the
critic's value and the actor prior) minus the true return of the actor's own plan, candidate 0.
Beyond the horizon: after each candidate's H actions the actor drives on in the copy (its filter fed the
candidate's path) to the episode's end (or `--tail` steps), and that discounted return to go is what the
critic's value at the candidate's last imagined state stands for. Per model: their rank correlation, the
value's bias and absolute error (candidates still running after H steps), and the pick's advantage over the
actor's plan in the whole return to the episode's end (H-step rewards + γ^H × return to go).

    .venv/bin/python bench/bench_plan_fidelity.py --pair steering_behaviour [--updates 150] [--episodes 10]
"""
import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch

from adawm_planner.core import lora
from adawm_planner.core.adaptation import Finetuner, linear_names
from adawm_planner.core.checkpoint import load_checkpoint
from adawm_planner.core.config import FinetuneConfig
from adawm_planner.core.networks import categorical_kl, gumbel
from adawm_planner.core.planner import Rollout, plan, score
from adawm_planner.experiments import mismatch_reference
from adawm_planner.experiments.pretrain import EVAL_SEED
from adawm_planner.share import package_share
from adawm_planner.sim import make_env, shift_pairs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_mismatch_repair import replay_of  # noqa: E402  (episodes -> Replay, as that bench builds it)

TRAIN_SEED = 20_000


def true_returns(env, actions, gamma, agent, state, tail) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per candidate, its actions (K, H) driven open loop from a copy of `env`: the discounted H-step return
    (0 after the episode ends), whether the episode failed within the H steps (a collision or off route),
    and, where it is still running after them, the discounted return to go from there with `agent`'s actor
    driving (actor mode, its filter fed the candidate's path; at most `tail` steps, the episode's end where
    None) — what the critic's value at the plan's last state estimates; NaN where the episode ended.
    `state` is the agent's state at `env`'s current observation (its filter has seen it)."""
    returns, failed = np.zeros(len(actions)), np.zeros(len(actions), bool)
    to_go = np.full(len(actions), np.nan)
    for k, sequence in enumerate(actions):
        copy_env, running = copy.deepcopy(env), {'latent': state['latent'], 'action': agent.encode_action(sequence[0])}
        obs = None   # the first action's observation is the one `state` has seen
        for t, action in enumerate(sequence):
            if t:   # the filter follows the candidate's path; its action replaces the actor's
                _, running, _ = agent.act(obs, running, 'actor')
                running['action'] = agent.encode_action(action)
            obs, reward, terminated, truncated, info = copy_env.step(int(action))
            returns[k] += gamma ** t * reward
            if terminated or truncated:
                failed[k] = bool(info.get('collision') or info.get('off_route'))
                break
        else:
            to_go[k], t = 0.0, 0
            while tail is None or t < tail:
                action, running, _ = agent.act(obs, running, 'actor')
                obs, reward, terminated, truncated, _ = copy_env.step(action)
                to_go[k] += gamma ** t * reward
                t += 1
                if terminated or truncated:
                    break
    return returns, failed, to_go


@torch.inference_mode()
def imagined(world_model, actor_critic, latent, actions, particles, gamma, prior_weight, generator):
    """Per candidate (K, H actions): the mean over `particles` prior draws of the imagined discounted H-step
    return, of the planner's score (+ the critic's value at the end and the actor prior) and of the critic's
    value at the last imagined state."""
    rssm = world_model.rssm
    candidates, horizon = actions.shape
    prior = gumbel((horizon, particles, rssm.stoch, rssm.classes), generator).repeat(1, candidates, 1, 1)
    rollout = Rollout(world_model, actor_critic, latent, (None, prior), actions=actions.repeat_interleave(particles, 0).t())
    for _ in range(horizon):
        rollout.step()
    traj = rollout.result()
    alive = torch.cumprod(torch.cat([torch.ones_like(traj['conts'][:, :1]), traj['conts'][:, :-1]], 1), 1)
    rewards = (gamma ** torch.arange(horizon) * alive * traj['rewards']).sum(1)
    per_candidate = lambda x: x.reshape(candidates, particles).mean(1).numpy()
    return (per_candidate(rewards), per_candidate(score(traj, gamma, prior_weight)),
            per_candidate(traj['terminal_values']))


def ranks(x) -> np.ndarray:
    """Ranks from 0, tied values sharing their mean rank (candidates often repeat a sequence)."""
    order = np.argsort(x, kind='stable')
    ranked = np.empty(len(x))
    ranked[order] = np.arange(len(x))
    _, groups = np.unique(x, return_inverse=True)
    return (np.bincount(groups, ranked) / np.bincount(groups))[groups]


def open_loop_repair(agent, base, replay, updates, horizon, config) -> None:
    """LoRA on the whole imagination step (img_in, the GRU, the prior head) of `agent`'s world model, trained
    on open-loop predictions: from `base`'s filtered posteriors at t, `horizon` imagined steps with the
    actions taken, each prior against base's posterior there (the dynamics KL with its free nats). Adapting
    the GRU changes the filter too, which the actor reads (docs/adaptation.md), so such a repair can only
    serve imagination, starting from the unadapted filter's states — as here."""
    wm, frozen = agent.world_model, base.world_model
    p = agent.preset
    targets = linear_names(wm, ('rssm.img_in', 'rssm.gru', 'rssm.img_out', 'rssm.prior'))
    agent.requires_grad_(False)
    lora.attach(wm, 'model', config.rank, config.alpha, targets)
    optimizer = torch.optim.Adam([q for q in wm.parameters() if q.requires_grad], config.model_lr)
    for _ in range(updates):
        batch = replay.sample(p.batch, p.seq_len)
        with torch.no_grad():
            posts, _ = frozen.observe(batch['bev'], batch['ego'], batch['action'], batch['is_first'])
        starts = batch['is_first'].shape[1] - horizon
        state = {k: posts[k][:, :starts].flatten(0, 1) for k in ('deter', 'stoch', 'logits')}
        running = torch.ones(state['deter'].shape[0])
        loss = 0.0
        for j in range(1, horizon + 1):
            running = running * (~batch['is_first'][:, j:starts + j].flatten()).float()   # same episode as t
            state = wm.rssm.img_step(state, batch['action'][:, j:starts + j].flatten(0, 1))
            kl = categorical_kl(posts['logits'][:, j:starts + j].flatten(0, 1), state['logits'])
            loss = loss + (running * torch.clamp(kl, min=p.free_nats)).sum() / running.sum().clamp(min=1.0)
        loss = p.dyn_scale * loss / horizon
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def spearman(a, b) -> float:
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float('nan')
    return float(np.corrcoef(ra, rb)[0, 1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--checkpoint', default=str(package_share() / 'checkpoints' / 'right_turn-moderate-small'))
    parser.add_argument('--pair', default='steering_behaviour')
    parser.add_argument('--task', help='measure on this task instead of the pair\'s new one (the repair still '
                        'trains on the pair\'s), e.g. the pretraining task as a control')
    parser.add_argument('--steps', type=int, default=3000, help='new-task steps the repair trains on')
    parser.add_argument('--updates', type=int, default=150)
    parser.add_argument('--episodes', type=int, default=10, help='actor-mode episodes measured')
    parser.add_argument('--every', type=int, default=5, help='env steps between measured states')
    parser.add_argument('--candidates', type=int, default=16)
    parser.add_argument('--particles', type=int, default=8)
    parser.add_argument('--tail', type=int, help='steps of return to go driven after each candidate (the '
                        "actor's, to judge the critic's terminal value); the episode's end by default")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    started = time.time()
    base, _ = load_checkpoint(args.checkpoint, seed=0)
    p = base.preset
    train_task = shift_pairs()[args.pair]['finetune']
    task = args.task or train_task

    episodes = mismatch_reference.collect(base, train_task, 10_000, TRAIN_SEED, mode='sample', max_steps=args.steps)
    replay = replay_of(episodes, base.action_dim)
    prior_head = copy.deepcopy(base)
    tuner = Finetuner(prior_head, FinetuneConfig(strategy='model'))
    for _ in range(args.updates):
        tuner.update_model(replay.sample(p.batch, p.seq_len))
    open_loop = copy.deepcopy(base)
    open_loop_repair(open_loop, base, replay, args.updates, p.plan_horizon, FinetuneConfig(strategy='model'))
    models = {'pretrained': base, 'prior head': prior_head, 'open loop': open_loop}
    print(f'bench_plan_fidelity: {args.pair}: repairs of {args.updates} updates on {len(replay)} steps of '
          f'{train_task}; measured on {task}, {args.episodes} actor-mode episodes, a state every {args.every} '
          f'steps, K={args.candidates} candidates × H={p.plan_horizon}, {args.particles} prior draws', flush=True)

    # every model starts its imagination from the pretrained filter's state: the prior-head repair leaves
    # the filter as it was, and the open-loop one is meant for imagination alone
    driver = base
    env = make_env(task, seed=EVAL_SEED)
    rows = {name: [] for name in models}
    generator = torch.Generator().manual_seed(0)
    for episode in range(args.episodes):
        obs, _ = env.reset(seed=EVAL_SEED + episode)
        state, done, t = None, False, 0
        while not done:
            action, state, _ = driver.act(obs, state, 'actor')
            if t % args.every == 0:
                _, info = plan(driver.world_model, driver.actor_critic, state['latent'], args.candidates,
                               p.plan_horizon, p.plan_prior_weight, generator)
                candidates = info['actions'].argmax(-1)                     # (K, H) indices
                truth, failed, to_go = true_returns(env, candidates, p.gamma, driver, state, args.tail)
                alive = np.isfinite(to_go)
                total = truth + p.gamma ** p.plan_horizon * np.nan_to_num(to_go)   # the return to the end
                # the state the candidates start from is after the filter step, before `action` is taken:
                # candidate 0's first action is the actor's mode, `action`
                seed = int(torch.randint(0, 2 ** 31, (1,), generator=generator))
                for name, model in models.items():
                    reward_sum, full, value = imagined(model.world_model, model.actor_critic, state['latent'], candidates,
                                                args.particles, p.gamma, p.plan_prior_weight,
                                                torch.Generator().manual_seed(seed))
                    pick, error = full.argmax(), value[alive] - to_go[alive]   # the critic against the truth
                    rows[name].append((spearman(reward_sum, truth), float(np.abs(reward_sum - truth).mean()),
                                       truth[reward_sum.argmax()] - truth[0], truth[pick] - truth[0],
                                       truth.max() - truth[0],
                                       spearman(value[alive], to_go[alive]) if alive.sum() > 2 else np.nan,
                                       error.mean() if alive.any() else np.nan,
                                       np.abs(error).mean() if alive.any() else np.nan,
                                       total[pick] - total[0], total.max() - total[0],
                                       failed[pick], failed[0], failed.mean()))
            obs, _, terminated, truncated, _ = env.step(action)
            done, t = terminated or truncated, t + 1
    # mean ± the half-width of a normal 95 % interval over states (consecutive states are correlated: wider
    # in truth); and the repaired model minus the pretrained one, paired by state
    columns = ('rank corr', '|error|', 'pick (rewards) - actor', 'pick (score) - actor', 'best - actor',
               'value corr', 'value - to go', '|value - to go|', 'pick (score) - actor, to end',
               'best - actor, to end', 'pick fails', 'actor fails', 'candidates fail')
    def cell(x):
        x = x[np.isfinite(x)]   # rank correlations are undefined where every candidate drove alike
        return f'{x.mean():.2f} ± {1.96 * x.std() / np.sqrt(len(x)):.2f}' if len(x) else 'n/a'
    table = {name: np.array(values, np.float64) for name, values in rows.items()}
    for name in ('prior head', 'open loop'):
        table[f'{name} - pretrained'] = table[name] - table['pretrained']
    print('| model | states | ' + ' | '.join(columns) + ' |\n|' + '---|' * (len(columns) + 2))
    for name, v in table.items():
        print(f'| {name} | {len(v)} | ' + ' | '.join(cell(v[:, i]) for i in range(len(columns))) + ' |')
    print(f'wall {time.time() - started:.0f} s')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
