"""Scene -> ego-centred, heading-up bird's-eye-view raster (H, W, 5) uint8.

Channels: 0 drivable area, 1 lane markings, 2 other vehicles, 3 ego, 4 route. Up in the image is ahead
of the ego, image left is the ego's left. Default view as CarDreamer: 32 m square, 20 m ahead, 12 m behind.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from adawm_planner.core.scene import Scene

CHANNELS = ('drivable', 'markings', 'vehicles', 'ego', 'route')
SHIFT = 3                     # cv2 sub-pixel bits: coordinates are drawn at 1/8 pixel precision
ONE = 1 << SHIFT


@dataclass(frozen=True)
class BevSpec:
    size: int = 64            # pixels per side (square raster)
    ahead: float = 20.0       # metres shown ahead of the ego
    behind: float = 12.0      # metres shown behind
    marking_px: int = 1       # line thickness in pixels
    route_px: int = 2

    @property
    def extent(self) -> float:
        return self.ahead + self.behind

    @property
    def px_per_m(self) -> float:
        return self.size / self.extent


def to_pixels(points: np.ndarray, ego_x, ego_y, ego_yaw, spec: BevSpec) -> np.ndarray:
    """Map-frame (N, 2) points -> fixed-point pixel coordinates (col, row) << SHIFT, int32."""
    c, s = np.cos(ego_yaw), np.sin(ego_yaw)
    dx, dy = points[..., 0] - ego_x, points[..., 1] - ego_y
    forward, left = c * dx + s * dy, -s * dx + c * dy
    scale = spec.px_per_m * ONE
    col = (spec.extent / 2 - left) * scale
    row = (spec.ahead - forward) * scale
    return np.stack([col, row], axis=-1).round().astype(np.int32)


def box_corners(x, y, yaw, length, width) -> np.ndarray:
    """(K, 4, 2) corners of oriented boxes."""
    c, s = np.cos(yaw), np.sin(yaw)
    along = np.stack([c, s], -1)[:, None, :] * (np.array([1, 1, -1, -1])[None, :, None] * np.asarray(length)[:, None, None] / 2)
    across = np.stack([-s, c], -1)[:, None, :] * (np.array([1, -1, -1, 1])[None, :, None] * np.asarray(width)[:, None, None] / 2)
    return np.stack([x, y], -1)[:, None, :] + along + across


def rasterize(scene: Scene, spec: BevSpec = BevSpec()) -> np.ndarray:
    ego = scene.ego
    n = spec.size
    planes = [np.zeros((n, n), np.uint8) for _ in CHANNELS]
    reach = np.hypot(max(spec.ahead, spec.behind), spec.extent / 2)   # farthest visible distance from the ego
    x_lo, y_lo, x_hi, y_hi = ego.x - reach, ego.y - reach, ego.x + reach, ego.y + reach
    pose = (ego.x, ego.y, ego.yaw, spec)

    visible = [(lane, index) for lane in scene.lanes for index, (a, b, c, d) in lane.chunks
               if c >= x_lo and d >= y_lo and a <= x_hi and b <= y_hi]
    if visible:   # one transform for every visible boundary point, then sliced back per chunk
        pieces = [side[index] for lane, index in visible for side in (lane.left, lane.right)]
        pixels = to_pixels(np.concatenate(pieces), *pose)
        lines, start = [], 0
        for lane, index in visible:
            count = index.stop - index.start
            left, right = pixels[start:start + count], pixels[start + count:start + 2 * count]
            start += 2 * count
            # one call each: a single fillPoly over overlapping polygons would cancel the overlaps
            cv2.fillPoly(planes[0], [np.concatenate([left, right[::-1]])], 255, cv2.LINE_8, SHIFT)
            lines += [left] * lane.left_marked + [right] * lane.right_marked
        if lines:
            cv2.polylines(planes[1], lines, False, 255, spec.marking_px, cv2.LINE_8, SHIFT)

    agents = scene.agents
    if len(agents):
        near = np.hypot(agents.x - ego.x, agents.y - ego.y) < reach + agents.length
        if near.any():
            corners = box_corners(agents.x[near], agents.y[near], agents.yaw[near], agents.length[near], agents.width[near])
            cv2.fillPoly(planes[2], list(to_pixels(corners, *pose)), 255, cv2.LINE_8, SHIFT)
    ego_box = box_corners(np.array([ego.x]), np.array([ego.y]), np.array([ego.yaw]), [ego.length], [ego.width])
    cv2.fillPoly(planes[3], list(to_pixels(ego_box, *pose)), 255, cv2.LINE_8, SHIFT)

    if len(scene.route) > 1:
        route = scene.route
        near = np.abs(route - [ego.x, ego.y]).max(1) < reach + 2.0
        if near.any():
            idx = np.flatnonzero(near)
            piece = route[max(idx[0] - 1, 0):idx[-1] + 2]
            cv2.polylines(planes[4], [to_pixels(piece, *pose)], False, 255, spec.route_px, cv2.LINE_8, SHIFT)
    return np.stack(planes, axis=-1)


def to_rgb(bev: np.ndarray) -> np.ndarray:
    """A (H, W, 5) raster as a picture people read: grey road, white markings, green route, blue others, red ego."""
    rgb = np.zeros(bev.shape[:2] + (3,), np.float32)
    layers = [(0, (70, 70, 70)), (1, (230, 230, 230)), (4, (40, 200, 80)), (2, (60, 120, 255)), (3, (255, 60, 60))]
    for channel, color in layers:
        alpha = bev[..., channel:channel + 1].astype(np.float32) / 255.0
        rgb = rgb * (1 - alpha) + alpha * np.array(color, np.float32)
    return rgb.astype(np.uint8)
