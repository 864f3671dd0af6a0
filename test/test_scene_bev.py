"""BEV raster geometry on hand-made scenes: ahead is up, left is left, heading-up while turning."""
import numpy as np
import pytest

from adawm_planner.core.bev import BevSpec, rasterize
from adawm_planner.core.scene import Agents, Ego, Lane, Scene

VEHICLES, EGO, ROUTE, DRIVABLE = 2, 3, 4, 0


def centroid(plane):
    rows, cols = np.nonzero(plane)
    assert len(rows), 'nothing drawn'
    return rows.mean(), cols.mean()


def scene_with(ego_yaw, forward, left, route=None):
    """One other car `forward` m ahead and `left` m to the left of an ego at (10, -5) heading ego_yaw."""
    c, s = np.cos(ego_yaw), np.sin(ego_yaw)
    x, y = 10 + c * forward - s * left, -5 + s * forward + c * left
    agents = Agents.from_rows([[x, y, ego_yaw, 0, 0, 4.5, 2.0]])
    return Scene(lanes=[], route=np.zeros((0, 2)) if route is None else route,
                 ego=Ego(10.0, -5.0, ego_yaw, 3.0), agents=agents)


@pytest.mark.parametrize('yaw', [0.0, 0.7, np.pi / 2, -2.5, np.pi])
def test_ahead_is_up_and_left_is_left_at_any_heading(yaw):
    ego_row, ego_col = centroid(rasterize(scene_with(yaw, 8.0, 0.0))[..., EGO])
    row, col = centroid(rasterize(scene_with(yaw, 8.0, 0.0))[..., VEHICLES])
    assert row < ego_row - 10 and abs(col - ego_col) < 1.5          # 8 m ahead = 16 px up at 2 px/m
    row, col = centroid(rasterize(scene_with(yaw, 0.0, 6.0))[..., VEHICLES])
    assert col < ego_col - 8 and abs(row - ego_row) < 1.5          # 6 m left = 12 px left
    row, col = centroid(rasterize(scene_with(yaw, -6.0, -6.0))[..., VEHICLES])
    assert row > ego_row + 8 and col > ego_col + 8                 # behind-right = down-right


def test_view_extent_and_ego_position():
    spec = BevSpec()
    bev = rasterize(scene_with(0.0, 30.0, 0.0), spec)               # beyond the 20 m ahead: not drawn
    assert bev.shape == (64, 64, 5) and bev.dtype == np.uint8
    assert not bev[..., VEHICLES].any()
    row, col = centroid(bev[..., EGO])
    assert abs(row - (spec.size * spec.ahead / spec.extent - 0.5)) < 1.0 and abs(col - 31.5) < 1.0
    assert bev[..., EGO].sum() / 255 == pytest.approx(5.0 * 2.0 * spec.px_per_m ** 2, rel=0.4)   # cv2 fills boundary pixels too
    assert rasterize(scene_with(0.0, 0.0, 0.0), BevSpec(size=128)).shape == (128, 128, 5)


def test_lane_drawn_along_heading_while_turning():
    """A lane along the ego's heading fills the centre column above the ego whatever the heading."""
    for yaw in np.linspace(-np.pi, np.pi, 9):
        direction = np.array([np.cos(yaw), np.sin(yaw)])
        center = np.array([10.0, -5.0]) + np.outer(np.arange(-15, 25, 2.0), direction)
        lane = Lane.from_center(center, 4.0)
        scene = Scene(lanes=[lane], route=center, ego=Ego(10.0, -5.0, yaw, 0.0))
        bev = rasterize(scene)
        assert bev[2:40, 30:34, DRIVABLE].all() and bev[2:40, 30:34, ROUTE].any()
        assert not bev[:, :20, DRIVABLE].any() and not bev[:, 44:, DRIVABLE].any()   # 4 m wide lane only
        assert bev[10, 27:29, 1].any() and bev[10, 35:37, 1].any()   # markings at ±2 m (±4 px)


def test_lane_from_center_left_is_left():
    lane = Lane.from_center(np.array([[0.0, 0.0], [10.0, 0.0], [20.0, 0.0]]), 3.0)
    assert np.allclose(lane.left[:, 1], 1.5) and np.allclose(lane.right[:, 1], -1.5)


def test_long_lane_is_culled_in_chunks():
    center = np.stack([np.arange(0, 10000, 2.0), np.zeros(5000)], 1)
    lane = Lane.from_center(center, 4.0)
    assert len(lane.chunks) > 100
    bev = rasterize(Scene(lanes=[lane], route=center[:10], ego=Ego(5000.0, 0.0, 0.0, 10.0)))
    assert bev[:, 28:36, DRIVABLE].all()
