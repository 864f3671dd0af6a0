"""How far the learning core is from the arithmetic this core can do: per workload, the floating-point
operations it performs (torch's FlopCounterMode: matmuls and convolutions, forward and backward), its thread
CPU time, and the rate that makes — against this core's best fp32 matrix-multiply rate measured in the same
run. A workload near that rate can only get faster by doing less arithmetic; one far below it still pays
per-op overhead. Also measured, interleaved: the world-model step's share spent in its convolutions, and the
two levers that keep the model's size (torch.compile of the imagination step; bf16 convolutions, which change
the maths).

    .venv/bin/python bench/bench_floor.py [--preset small] [--repeats 7] [--skip-compile]

One torch thread; figures are medians of thread CPU time (robust to other processes on other cores).
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_peer import ACTIONS, BEV, EGO, learning_steps, synthetic_data  # noqa: E402  (the same batch and steps)

from adawm_planner.core import planner
from adawm_planner.core.agent import Agent
from adawm_planner.core.learner import Learner
from adawm_planner.core.networks import TwoHot
from adawm_planner.core.presets import load_preset


def cpu_seconds(fn, repeats):
    fn()  # first call: allocations, caches
    samples = []
    for _ in range(repeats):
        start = time.thread_time()
        fn()
        samples.append(time.thread_time() - start)
    return statistics.median(samples)


def flops_of(fn):
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def gemm_rate(repeats):
    """GFLOP/s of the best of a few fp32 matmul shapes (large and the sizes the model uses)."""
    best = 0.0
    for m, k, n in ((1024, 1024, 1024), (8192, 384, 128), (512, 256, 384)):
        x, w = torch.randn(m, k), torch.randn(k, n)
        best = max(best, 2 * m * k * n / cpu_seconds(lambda: x @ w, repeats) / 1e9)
    return best


def conv_layers(world_model, frames, repeats):
    """Each convolution of the encoder and decoder on its own, at the shapes a batch gives it: forward, and
    forward + backward (the input's gradient too, except for the first layer, whose input is the data)."""
    layers, x = [], frames.float().permute(0, 3, 1, 2)
    with torch.no_grad():
        for module in world_model.bev_encoder.convs:
            if isinstance(module, torch.nn.Conv2d):
                layers.append(('encoder', module, x))
            x = module(x)
        decoder = world_model.bev_decoder
        x = decoder.inp(torch.randn(len(frames), world_model.feat_dim)).reshape(-1, decoder.top, 4, 4)
        x = x.contiguous(memory_format=torch.channels_last)
        for module in decoder.deconvs:
            if isinstance(module, torch.nn.ConvTranspose2d):
                layers.append(('decoder', module, x))
            x = module(x)
    print('| layer | input | GFLOP fwd | fwd ms | fwd GFLOP/s | fwd + bwd ms | fwd + bwd GFLOP/s |')
    print('|---|---|---|---|---|---|---|')
    for index, (stack, module, x) in enumerate(layers):
        inp = x.detach().requires_grad_(index > 0)
        grad = torch.ones_like(module(x)).contiguous(memory_format=torch.channels_last)
        forward = flops_of(lambda: module(x))
        both = flops_of(lambda: module(inp).backward(grad))
        fwd_s = cpu_seconds(lambda: module(x), repeats)
        both_s = cpu_seconds(lambda: module(inp).backward(grad), repeats)
        print(f'| {stack} {type(module).__name__} {module.in_channels}→{module.out_channels} | '
              f'{x.shape[-2]}×{x.shape[-1]} | {forward / 1e9:.2f} | {1e3 * fwd_s:.1f} | {forward / fwd_s / 1e9:.0f} | '
              f'{1e3 * both_s:.1f} | {both / both_s / 1e9:.0f} |')


def imagination_step(world_model, actor_critic, heads, offsets):
    """One imagined step of all candidates as planner.Rollout.step computes it (discrete actor; candidate 0
    samples too instead of taking the actor's mode), with the reward and continue heads the planner batches
    over the steps at scoring, written as a function of tensors so that torch.compile sees the whole step."""
    rssm, actor = world_model.rssm, actor_critic.actor

    def step(columns, deter, actor_noise, prior_noise):
        params = actor.params(heads.mlps['actor'](columns, deter))
        index = (params + actor_noise).argmax(-1)
        logp = params.gather(-1, index[:, None])[:, 0]
        deter = rssm.recurrent(heads.img_in(torch.cat([columns, rssm.stoch * rssm.classes + index[:, None]], 1)),
                               deter)
        columns = (rssm.prior_logits(deter) + prior_noise).argmax(-1) + offsets
        reward = TwoHot(heads.mlps['reward'](columns, deter), world_model.bins).mean()
        cont = torch.sigmoid(heads.mlps['cont'](columns, deter)[:, 0])
        return index, logp, reward, cont, deter, columns
    return step


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--preset', default='small')
    parser.add_argument('--repeats', type=int, default=7)
    parser.add_argument('--skip-compile', action='store_true', help='leave out the torch.compile comparison')
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    preset = load_preset(args.preset)
    agent = Agent(preset, BEV, EGO, ACTIONS, seed=0)
    learner = Learner(agent)   # also keeps freed memory in the process, as training does
    wm, ac = agent.world_model, agent.actor_critic
    batch = {k: torch.from_numpy(v) for k, v in synthetic_data(preset, np.random.default_rng(0)).items()}
    world_model_step, actor_critic_step, posts = learning_steps(agent, learner, batch)

    frames = batch['bev'].flatten(0, 1)
    feats = torch.randn(len(frames), wm.feat_dim)

    def convolutions():  # the encoder and decoder stacks over the batch's frames, forward and backward
        embed = wm.bev_encoder(frames)
        image = wm.bev_decoder(feats)
        (embed.square().mean() + image.square().mean()).backward()

    latent = {k: v[:1] for k, v in posts.items()}
    k, h = preset.plan_candidates, preset.plan_horizon

    def lookahead():
        planner.plan(wm, ac, latent, k, h, preset.plan_prior_weight, agent.generator)

    rate = gemm_rate(args.repeats)
    print(f'preset {args.preset}, torch {torch.__version__}, 1 thread; best fp32 matmul rate here: '
          f'{rate:.1f} GFLOP/s\n')
    print('| workload | GFLOP | CPU ms | GFLOP/s | share of the matmul rate | arithmetic alone at that rate (ms) |')
    print('|---|---|---|---|---|---|')
    workloads = [(f'world-model step {preset.batch}×{preset.seq_len}', world_model_step),
                 (f'actor-critic step, {preset.batch * preset.seq_len} starts × H{preset.horizon}',
                  actor_critic_step),
                 (f'convolutions alone (encoder + decoder, {len(frames)} frames, fwd + bwd)', convolutions),
                 (f'lookahead K={k} × H={h}', lookahead)]
    seconds = {}
    for name, fn in workloads:
        flop = flops_of(fn)
        seconds[name] = cpu_seconds(fn, args.repeats)
        achieved = flop / seconds[name] / 1e9
        print(f'| {name} | {flop / 1e9:.3f} | {1e3 * seconds[name]:.1f} | {achieved:.1f} | {achieved / rate:.2f} | '
              f'{1e3 * flop / 1e9 / rate:.1f} |')
    wm_name, conv_name = workloads[0][0], workloads[2][0]
    print(f'\nconvolutions / world-model step: {seconds[conv_name] / seconds[wm_name]:.2f} of its CPU time\n')
    conv_layers(wm, frames, args.repeats)

    with torch.autocast('cpu', dtype=torch.bfloat16):
        bf16 = cpu_seconds(convolutions, args.repeats)
    fp32 = cpu_seconds(convolutions, args.repeats)
    print(f'convolutions in bf16 (autocast; changes the maths): {1e3 * bf16:.1f} ms against fp32 {1e3 * fp32:.1f} ms '
          f'({fp32 / bf16:.2f}x)')

    if not args.skip_compile:
        heads = planner.Heads(wm, ac)
        offsets = torch.arange(wm.rssm.stoch) * wm.rssm.classes
        step = imagination_step(wm, ac, heads, offsets)
        noise = planner.draw_noise(k, h, ACTIONS, wm.rssm, True, agent.generator)
        columns = (latent['stoch'].argmax(-1) + offsets).expand(k, -1)
        deter = latent['deter'].expand(k, -1)

        def rollout(fn):
            c, d = columns, deter
            for t in range(h):
                *_, d, c = fn(c, d, noise[0][t], noise[1][t])
            return d

        with torch.inference_mode():
            started = time.perf_counter()
            compiled = torch.compile(step, dynamic=False)
            same = torch.allclose(rollout(step), rollout(compiled), atol=1e-5)
            compile_wall = time.perf_counter() - started
            eager, fused = [], []
            for _ in range(args.repeats):   # interleaved: the two see the same machine
                eager.append(cpu_seconds(lambda: rollout(step), 10))
                fused.append(cpu_seconds(lambda: rollout(compiled), 10))
        print(f'imagination rollout K={k} × H={h} (steps only): eager {1e3 * statistics.median(eager):.1f} ms, '
              f'torch.compile {1e3 * statistics.median(fused):.1f} ms '
              f'({statistics.median(eager) / statistics.median(fused):.2f}x; compiled in {compile_wall:.0f} s; '
              f'same trajectory: {same})')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
