"""What a run logs: scalars into scalars.csv (step, name, value — readable anywhere) and, the same values,
into TensorBoard event files in the run's folder (`tensorboard --logdir runs/`), with images beside them."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from adawm_planner.core.bev import CHANNELS, to_rgb


class RunLog:
    def __init__(self, directory):
        from torch.utils.tensorboard import SummaryWriter
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.file = open(directory / 'scalars.csv', 'a', newline='')
        self.writer = csv.writer(self.file)
        if self.file.tell() == 0:
            self.writer.writerow(['step', 'name', 'value'])
        self.board = SummaryWriter(str(directory))

    def scalars(self, step: int, values: dict, prefix: str = '') -> None:
        for name, value in values.items():
            self.writer.writerow([step, prefix + name, f'{value:.6g}'])
            self.board.add_scalar(prefix + name, value, step)
        self.file.flush()

    def image(self, step: int, name: str, rgb: np.ndarray) -> None:
        self.board.add_image(name, rgb, step, dataformats='HWC')

    def close(self) -> None:
        self.file.close()
        self.board.close()


@torch.no_grad()
def bev_comparison(world_model, replay, length: int = 8) -> np.ndarray:
    """One replayed sequence as pictures: the real BEV frames (top row) over the world model's reconstruction
    from its posterior (bottom row), RGB (H·2, W·length, 3) uint8."""
    batch = replay.sample(1, length)
    posts, _ = world_model.observe(batch['bev'], batch['ego'], batch['action'], batch['is_first'])
    decoded = (world_model.bev_decoder(world_model.feat(posts))[0].clamp(0, 1) * 255).to(torch.uint8).numpy()
    picture = lambda frame: to_rgb(frame) if frame.shape[-1] == len(CHANNELS) else np.repeat(frame[..., :1], 3, -1)
    row = lambda frames: np.concatenate([picture(frame) for frame in frames], axis=1)
    return np.concatenate([row(batch['bev'][0].numpy()), row(decoded)], axis=0)
