"""Lanes -> OpenDRIVE -> carla.Map (offline) -> lanes: the map path between the embedded bridge and the planner."""
import numpy as np
import pytest

from adawm_planner.core.opendrive import lanes_from_opendrive, to_opendrive
from adawm_planner.core.scene import Lane


def distance_to_polyline(points, polyline):
    a, b = polyline[:-1], polyline[1:]
    ab = b - a
    t = np.clip(((points[:, None] - a[None]) * ab[None]).sum(-1) / (ab * ab).sum(-1)[None], 0, 1)
    closest = a[None] + t[..., None] * ab[None]
    return np.linalg.norm(points[:, None] - closest, axis=-1).min(axis=1)


def test_roundtrip_keeps_centre_lines_widths_and_ends():
    angle = np.linspace(0, np.pi / 2, 60)
    left_turn = np.stack([20 * np.sin(angle), 20 * (1 - np.cos(angle))], 1) + [5.0, -3.0]   # CCW in the map frame
    straight = np.stack([np.linspace(-50, 0.3, 26), np.full(26, 2.0)], 1)
    lanes = lanes_from_opendrive(to_opendrive([Lane.from_center(straight, 4.0, left_marked=False),
                                               Lane.from_center(left_turn, 3.5, right_marked=False)]), spacing=1.0)

    assert [lane.width for lane in lanes] == [4.0, 3.5]
    assert [(lane.left_marked, lane.right_marked) for lane in lanes] == [(False, True), (True, False)]
    for centre, original in zip([lane.center for lane in lanes], [straight, left_turn]):
        assert np.allclose(centre[0], original[0], atol=0.02) and np.allclose(centre[-1], original[-1], atol=0.02)
        assert distance_to_polyline(centre, original).max() < 0.1
    # map frame kept: the left turn goes to +y (CARLA's own frame would have negated it)
    assert lanes[1].center[-1, 1] > 15


def test_not_opendrive_is_a_clear_error():
    with pytest.raises(ValueError, match='not OpenDRIVE'):
        lanes_from_opendrive('<html>nope</html>')
