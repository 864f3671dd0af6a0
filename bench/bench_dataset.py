"""Conversion speed of `adawm dataset`: recorded minutes per wall minute.

Records a drive first (the embedded task, 20 Hz frames as carla-ros-bridge publishes them, driven by the
scripted driver with random controls mixed in, plus a vendor lidar the dataset skips: test_dataset's
write_drives), then converts it under the shipped checkpoint's contract and prints the manifest's timing.

    .venv/bin/python bench/bench_dataset.py --episodes 20 --frames 600 --out runs/bench_dataset
"""
import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'test'))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--episodes', type=int, default=20)
    parser.add_argument('--frames', type=int, default=600, help='frames (20 Hz) per episode at most')
    parser.add_argument('--out', default='runs/bench_dataset')
    args = parser.parse_args()

    import torch
    torch.set_num_threads(1)
    from test_dataset import write_drives

    from adawm_planner.core.checkpoint import read_contract, read_meta
    from adawm_planner.dataset import build_dataset
    from adawm_planner.nodes.convert import default_checkpoint

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    started = time.perf_counter()
    bag = write_drives(out / 'bag', args.episodes, args.frames)
    recorded = time.perf_counter() - started
    checkpoint = default_checkpoint()
    contract = read_contract(read_meta(checkpoint))
    manifest = build_dataset([bag], out / 'dataset', contract, {'checkpoint': checkpoint})
    size = sum(f.stat().st_size for f in (out / 'bag').glob('*.mcap'))
    result = {'bag_mb': round(size / 2**20, 1), 'steps': manifest['steps'], 'segments': manifest['segments'],
              'outcomes': manifest['outcomes'], 'writing_bag_s': round(recorded, 1), **manifest['conversion'],
              'action_mapping': {k: manifest['action_mapping'][k] for k in ('pedal_residual', 'steer_residual')}}
    print(json.dumps(result, indent=2))
    (out / 'result.json').write_text(json.dumps(result, indent=2) + '\n')


if __name__ == '__main__':
    main()
