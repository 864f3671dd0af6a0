"""Our `small` agent side by side with a public PyTorch DreamerV3 (NM512/dreamerv3-torch) of the same size,
timed interleaved in one process on the same synthetic batch: world-model train step, actor-critic step,
full update, act() (batch 1: encoder + posterior + actor) and a K×H imagination lookahead.

Getting the reference (its code never goes into this repository):

    git clone https://github.com/NM512/dreamerv3-torch /tmp/dreamerv3-torch
    git -C /tmp/dreamerv3-torch checkout 6ef8646d807cd10ce0c88e10a7e943211e7fc44c

    .venv/bin/python bench/bench_peer.py --reference /tmp/dreamerv3-torch [--repeats 5] [--threads 1]

Equal size (docs: /work/shared/notes/reference-dreamerv3.md): deter/hidden 128, 16×16 latents, units 128,
2-layer heads, encoder depth 16; the reference's decoder uses depth 8 because ours is half-width. Discrete
actions with REINFORCE gradients, as its Atari/Crafter configs. Parameter counts are printed so the match
can be checked. Each figure is the median over `--repeats`, ours and the reference alternating.
"""
import argparse
import statistics
import sys
import time
import types
import warnings
from pathlib import Path

import numpy as np
import torch

from adawm_planner.core.agent import Agent
from adawm_planner.core.planner import plan
from adawm_planner.core.presets import load_preset
from adawm_planner.core.learner import Learner

BEV, EGO, ACTIONS = (64, 64, 5), 9, 15
REFERENCE_COMMIT = '6ef8646d807cd10ce0c88e10a7e943211e7fc44c'


def import_reference(path):
    """Import the reference's modules from `path` on a CPU-only torch without tensorboard or gym."""
    path = Path(path).resolve()
    warnings.filterwarnings('ignore', category=FutureWarning)  # its torch.cuda.amp calls, disabled on CPU
    if not (path / 'models.py').exists():
        sys.exit(f'{path} does not hold dreamerv3-torch (no models.py); see this file\'s docstring')
    tensorboard = types.ModuleType('torch.utils.tensorboard')
    tensorboard.SummaryWriter = None  # only its Logger uses it; never called here
    sys.modules.setdefault('torch.utils.tensorboard', tensorboard)
    sys.path.insert(0, str(path))
    import networks
    import tools
    import models
    # Its MLP defaults to device='cuda'; everything else takes the config's device.
    defaults = networks.MLP.__init__.__defaults__
    networks.MLP.__init__.__defaults__ = tuple('cpu' if d == 'cuda' else d for d in defaults)
    return models, tools


def reference_config(path, preset):
    import ruamel.yaml
    configs = ruamel.yaml.YAML(typ='safe', pure=True).load((Path(path) / 'configs.yaml').read_text())
    c = dict(configs['defaults'])
    p = preset
    c.update(device='cpu', compile=False, precision=32, num_actions=ACTIONS,
             dyn_deter=p.deter, dyn_hidden=p.hidden, dyn_stoch=p.stoch, dyn_discrete=p.classes, units=p.units,
             batch_size=p.batch, batch_length=p.seq_len, imag_horizon=p.horizon, imag_gradient='reinforce',
             discount=p.gamma, discount_lambda=p.lam, model_lr=p.model_lr, kl_free=p.free_nats,
             dyn_scale=p.dyn_scale, rep_scale=p.rep_scale, grad_clip=p.grad_clip)
    # Its encoder MLP has no output layer where ours has one: two hidden layers match our 1 + out.
    c['encoder'] = {**c['encoder'], 'mlp_keys': 'ego', 'cnn_keys': 'image', 'cnn_depth': p.cnn_depth,
                    'mlp_layers': 2, 'mlp_units': p.units}
    c['decoder'] = {**c['decoder'], 'mlp_keys': 'ego', 'cnn_keys': 'image', 'cnn_depth': p.cnn_depth // 2,
                    'mlp_layers': p.layers, 'mlp_units': p.units}
    c['actor'] = {**c['actor'], 'dist': 'onehot', 'std': 'none', 'layers': p.layers, 'lr': p.actor_lr,
                  'entropy': p.entropy}
    c['critic'] = {**c['critic'], 'layers': p.layers, 'lr': p.critic_lr}
    c['reward_head'] = {**c['reward_head'], 'layers': p.layers}
    c['cont_head'] = {**c['cont_head'], 'layers': p.layers}
    return types.SimpleNamespace(**c)


class Reference:
    """The reference's world model and behaviour, driven the way its Dreamer class drives them."""

    def __init__(self, path, preset):
        self.models, self.tools = import_reference(path)
        self.config = reference_config(path, preset)
        space = lambda *shape: types.SimpleNamespace(shape=shape)
        obs_space = types.SimpleNamespace(spaces={
            'image': space(*BEV), 'ego': space(EGO), 'reward': space(), 'is_first': space(),
            'is_terminal': space()})
        self.wm = self.models.WorldModel(obs_space, None, 0, self.config)
        self.behavior = self.models.ImagBehavior(self.config, self.wm)

    def counts(self):
        count = lambda m: sum(p.numel() for p in m.parameters())
        return {'world model': count(self.wm), 'actor': count(self.behavior.actor),
                'critic': count(self.behavior.value)}

    def reward(self, feat, state, action):
        return self.wm.heads['reward'](self.wm.dynamics.get_feat(state)).mode()

    def world_model_step(self, data):
        return self.wm._train(data)[0]

    def actor_critic_step(self, post):
        self.behavior._train(post, self.reward)

    def full_update(self, data):
        self.actor_critic_step(self.world_model_step(data))

    @torch.no_grad()
    def act(self, obs, state):
        data = self.wm.preprocess(obs)
        latent, action = state if state is not None else (None, None)
        latent, _ = self.wm.dynamics.obs_step(latent, action, self.wm.encoder(data), data['is_first'])
        action = self.behavior.actor(self.wm.dynamics.get_feat(latent)).mode()
        return latent, action

    @torch.no_grad()
    def lookahead(self, latent, candidates, horizon):
        start = {k: v.expand(candidates, *v.shape[1:])[None] for k, v in latent.items()}
        feats, states, _ = self.behavior._imagine(start, self.behavior.actor, horizon)
        heads = self.wm.heads
        reward = heads['reward'](feats).mode()
        cont = heads['cont'](feats).mean
        value = self.behavior.value(feats[-1]).mode()
        return reward, cont, value


def synthetic_data(preset, rng):
    b, t = preset.batch, preset.seq_len
    is_first = np.zeros((b, t), bool)
    is_first[:, 0] = True
    return {'bev': rng.integers(0, 2, (b, t, *BEV), dtype=np.uint8) * 255,
            'ego': rng.normal(size=(b, t, EGO)).astype(np.float32),
            'action': np.eye(ACTIONS, dtype=np.float32)[rng.integers(0, ACTIONS, (b, t))],
            'reward': rng.normal(size=(b, t)).astype(np.float32), 'is_first': is_first,
            'is_terminal': np.zeros((b, t), bool)}


def learning_steps(agent, learner, batch):
    """Our world-model train step and actor-critic step as calls, the actor-critic on the flattened posteriors
    of one world-model step on `batch` (also returned), as Learner.update chains them."""
    wm, ac = agent.world_model, agent.actor_critic

    def world_model_step():
        loss, _, posts = wm.loss_and_posts(batch)
        learner._step(learner.model_opt, loss, wm.parameters())
        return posts

    posts = {k: v.detach().flatten(0, 1) for k, v in world_model_step().items()}
    start_cont = torch.ones(len(posts['deter']))

    def actor_critic_step():
        actor_loss, critic_loss, _ = ac.loss(wm, posts, start_cont, agent.generator)
        learner._step(learner.actor_opt, actor_loss, ac.actor.parameters())
        learner._step(learner.critic_opt, critic_loss, ac.critic.parameters())
        ac.update_slow_critic()

    return world_model_step, actor_critic_step, posts


clock = time.perf_counter  # --clock cpu: time.thread_time, this thread's CPU time (robust on a busy machine)


def median_ms(samples):
    return 1e3 * statistics.median(samples)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--reference', required=True, help=f'checkout of dreamerv3-torch at {REFERENCE_COMMIT}')
    parser.add_argument('--preset', default='small')
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--ticks', type=int, default=50, help='act() and lookahead calls per repeat')
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--clock', choices=['wall', 'cpu'], default='wall',
                        help="'cpu': time each call by this thread's CPU time (with 1 thread, robust to load)")
    args = parser.parse_args()
    global clock
    clock = time.thread_time if args.clock == 'cpu' else time.perf_counter
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    preset = load_preset(args.preset)
    data = synthetic_data(preset, np.random.default_rng(0))
    ours_batch = {k: torch.from_numpy(v) for k, v in data.items()}
    ref_data = {('image' if k == 'bev' else k): v for k, v in data.items()}
    ref_data['image'] = ref_data['image'].astype(np.float32)

    agent = Agent(preset, BEV, EGO, ACTIONS, seed=0)
    learner = Learner(agent)
    ref = Reference(args.reference, preset)
    wm, ac = agent.world_model, agent.actor_critic
    ours_counts = {'world model': sum(p.numel() for p in wm.parameters()),
                   'actor': sum(p.numel() for p in ac.actor.parameters()),
                   'critic': sum(p.numel() for p in ac.critic.parameters())}
    ref_counts = ref.counts()

    ours_world_model_step, ours_actor_critic_step, _ = learning_steps(agent, learner, ours_batch)

    ref_post = ref.world_model_step(ref_data)
    frames = [{'bev': data['bev'][0, i % preset.seq_len], 'ego': data['ego'][0, i % preset.seq_len]}
              for i in range(args.ticks)]
    ref_frames = [{'image': f['bev'][None].astype(np.float32), 'ego': f['ego'][None],
                   'is_first': np.array([i == 0]), 'is_terminal': np.array([False])}
                  for i, f in enumerate(frames)]

    def ours_act():
        state, samples = None, []
        for frame in frames:
            start = clock()
            _, state, _ = agent.act(frame, state, 'actor')
            samples.append(clock() - start)
        return samples, state['latent']

    def ref_act():
        state, samples = None, []
        for frame in ref_frames:
            start = clock()
            state = ref.act(frame, state)
            samples.append(clock() - start)
        return samples, state[0]

    def lookaheads(fn):
        samples = []
        for _ in range(args.ticks):
            start = clock()
            fn()
            samples.append(clock() - start)
        return samples

    k, h = preset.plan_candidates, preset.plan_horizon
    def timed(fn):
        def once():
            start = clock()
            fn()
            return [clock() - start]
        return once

    measures = [
        (f'world-model train step, batch {preset.batch}×{preset.seq_len}',
         timed(ours_world_model_step), timed(lambda: ref.world_model_step(ref_data))),
        (f'actor-critic step, {preset.batch * preset.seq_len} starts × H{preset.horizon}',
         timed(ours_actor_critic_step), timed(lambda: ref.actor_critic_step(ref_post))),
        ('full update (world model + actor-critic)',
         timed(lambda: learner.update(ours_batch)), timed(lambda: ref.full_update(ref_data))),
        ('act(), batch 1 (encoder + posterior + actor)', lambda: ours_act()[0], lambda: ref_act()[0]),
    ]
    ours_latent, ref_latent = ours_act()[1], ref_act()[1]
    measures.append((f'lookahead K={k} × H={h} (+ reward, continue, value heads)',
                     lambda: lookaheads(lambda: plan(wm, ac, ours_latent, k, h, preset.plan_prior_weight,
                                                     agent.generator)),
                     lambda: lookaheads(lambda: ref.lookahead(ref_latent, k, h))))

    results = {name: ([], []) for name, _, _ in measures}
    for name, ours_fn, ref_fn in measures:  # warm-up: first calls allocate and fill caches
        ours_fn(), ref_fn()
    for _ in range(args.repeats):
        for name, ours_fn, ref_fn in measures:
            results[name][0].extend(ours_fn())
            results[name][1].extend(ref_fn())

    print(f'preset {args.preset} vs dreamerv3-torch at equal size; torch {torch.__version__}, '
          f'{args.threads} thread(s), {args.repeats} interleaved repeats, {args.clock} clock')
    print('| parameters | ours | reference |\n|---|---|---|')
    for name in ours_counts:
        print(f'| {name} | {ours_counts[name]:,} | {ref_counts[name]:,} |')
    print('\n| measure (median ms) | ours | reference | speed-up |\n|---|---|---|---|')
    for name, (ours_samples, ref_samples) in results.items():
        o, r = median_ms(ours_samples), median_ms(ref_samples)
        extra = ''
        if len(ours_samples) > 20:
            extra = (f' (p99 {np.percentile(ours_samples, 99) * 1e3:.1f} / '
                     f'{np.percentile(ref_samples, 99) * 1e3:.1f})')
        print(f'| {name}{extra} | {o:.1f} | {r:.1f} | {r / o:.2f}× |')


if __name__ == '__main__':
    main()
