"""`adawm analyze` speed: model steps per wall second and real-time factor over two recorded drives — one on
the embedded simulator's own map, one on a CARLA-style OpenDRIVE junction (four arms, sixteen roads with lines
and arcs) — and the command's process start.

    .venv/bin/python bench/bench_analyze.py [--seconds 120] [--checkpoint DIR]

Both drives are written as `adawm record` writes them (rosbag2 + MCAP, 20 Hz frames): odometry, objects,
the command, the map and the route. Prints one row per drive: wall time, and this process's CPU time (one
torch thread), whose real-time factor is what the analysis achieves on a core of its own — on a shared
machine the wall figures mostly measure the neighbours.
"""
import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'test'))


def drives(tmp, seconds):
    from carla_junction import junction_xodr, record

    from adawm_planner.core.opendrive import lanes_from_opendrive, to_opendrive
    from adawm_planner.sim import default_task, make_env

    env = make_env(default_task(), seed=0)
    env.reset(seed=0)
    scene = env.unwrapped.scene()
    embedded = [(lane.center, 4.0) for lane in scene.lanes[:6]]
    yield 'embedded map (right_turn)', record(tmp / 'embedded', to_opendrive(scene.lanes), scene.route, seconds,
                                              agents=embedded)
    xodr = junction_xodr(arm=80.0)
    lanes = lanes_from_opendrive(xodr)
    longest = max(lanes, key=lambda lane: len(lane.center))
    others = [(lane.center, 6.0) for lane in lanes if lane is not longest][:8]
    yield (f'CARLA-style junction ({len(lanes)} lanes, {sum(len(l.center) for l in lanes)} waypoints)',
           record(tmp / 'junction', xodr, longest.center, seconds, agents=others))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seconds', type=float, default=120.0, help='recorded seconds per drive')
    parser.add_argument('--checkpoint', default='', help='default: the shipped one')
    args = parser.parse_args()
    import torch
    torch.set_num_threads(1)
    from adawm_planner.analyze import analyze
    from adawm_planner.nodes.convert import default_checkpoint
    checkpoint = args.checkpoint or default_checkpoint()
    print(f'checkpoint {checkpoint}; {args.seconds:.0f} s per drive, 20 Hz frames, a model step every 0.1 s')
    print('| drive | model steps | wall s | ms per step | real time × | CPU s | CPU ms per step | real time × on a free core |')
    print('|---|---|---|---|---|---|---|---|')
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, bag in drives(tmp, args.seconds):
            cpu = time.process_time()   # this process's CPU time: what a core of its own would take
            summary = analyze(bag, checkpoint, tmp / f'out-{bag.name}')
            cpu, wall, steps = time.process_time() - cpu, summary['wall_seconds'], max(summary['steps'], 1)
            print(f'| {name} | {summary["steps"]} | {wall:.2f} | {1000 * wall / steps:.2f} | '
                  f'{summary["real_time_factor"]} | {cpu:.2f} | {1000 * cpu / steps:.2f} | '
                  f'{summary["bag_seconds"] / cpu:.1f} |', flush=True)
        short = next(drives(tmp / 'short', 1.0))[1]
        started, children = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([sys.executable, '-m', 'adawm_planner.cli', 'analyze', str(short), '--checkpoint', checkpoint,
                        '--out', str(tmp / 'out-short')], check=True, capture_output=True)
        used = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = used.ru_utime + used.ru_stime - children.ru_utime - children.ru_stime
        print(f'`adawm analyze` of a 1 s recording, process start to exit (imports, two agents loaded, plots): '
              f'{time.perf_counter() - started:.2f} s wall, {cpu:.2f} s CPU')


if __name__ == '__main__':
    main()
