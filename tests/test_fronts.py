"""Pareto masks and exact hypervolumes: constructed sets with known volumes, a brute-force count
on integer grids, and the properties every hypervolume has (monotone, blind to dominated points,
to order and to duplicates)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from unlearn.uncertainty.fronts import hypervolume, pareto_mask


def grid_volume(points: np.ndarray, ref: int) -> int:
    """Unit cells of [0, ref)^d whose lower corner some point is ≤ (integer points): the exact
    dominated volume, counted."""
    d = points.shape[1]
    return sum(bool((points <= np.array(cell)).all(axis=1).any()) for cell in itertools.product(range(ref), repeat=d))


def test_pareto_mask_minimise_maximise_duplicates_and_nan() -> None:
    pts = [(1, 5), (2, 3), (3, 4), (4, 1), (2, 3), (5, 1), (math.nan, 0)]
    assert pareto_mask(pts).tolist() == [True, True, False, True, True, False, False]
    # maximising the second column turns the order around
    assert pareto_mask(pts, minimize=[True, False]).tolist() == [True, False, False, False, False, False, False]
    assert pareto_mask(np.empty((0, 2))).tolist() == []
    with pytest.raises(ValueError, match="2-D"):
        pareto_mask([1.0, 2.0])


def test_hypervolume_known_volumes() -> None:
    assert hypervolume([[1.0, 1.0]], [3.0, 4.0]) == pytest.approx(6.0)
    # an L-shape: two boxes 3×1 and 1×3 overlapping in 1×1
    assert hypervolume([[0.0, 2.0], [2.0, 0.0]], [3.0, 3.0]) == pytest.approx(5.0)
    assert hypervolume([[1.0, 1.0, 1.0]], [2.0, 3.0, 4.0]) == pytest.approx(6.0)
    # three unit-offset corners of a cube of side 2: 3·4 − 3·2 + 1 = 7 (inclusion–exclusion)
    pts = [[0, 1, 1], [1, 0, 1], [1, 1, 0]]
    assert hypervolume(pts, [2, 2, 2]) == pytest.approx(3 * 2 - 3 * 1 + 1)
    # points on or beyond the reference add nothing
    assert hypervolume([[3.0, 0.0], [1.0, 1.0]], [3.0, 2.0]) == pytest.approx(2.0)
    assert hypervolume(np.empty((0, 3)), [1, 1, 1]) == 0.0
    with pytest.raises(ValueError, match="objectives"):
        hypervolume([[0.0, 0.0]], [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="finite"):
        hypervolume([[0.0, 0.0]], [1.0, math.inf])


@pytest.mark.parametrize("d", [2, 3])
def test_hypervolume_equals_the_cell_count_on_integer_points(d: int) -> None:
    rng = np.random.default_rng(d)
    for _ in range(25):
        pts = rng.integers(0, 6, size=(int(rng.integers(1, 7)), d)).astype(float)
        assert hypervolume(pts, [6] * d) == pytest.approx(grid_volume(pts, 6))


@pytest.mark.parametrize("d", [2, 3])
def test_hypervolume_properties(d: int) -> None:
    rng = np.random.default_rng(10 + d)
    ref = np.ones(d)
    for _ in range(30):
        pts = rng.random((int(rng.integers(1, 9)), d))
        hv = hypervolume(pts, ref)
        # order, duplicates and dominated points change nothing
        assert hypervolume(pts[::-1], ref) == pytest.approx(hv)
        assert hypervolume(np.vstack([pts, pts[:1]]), ref) == pytest.approx(hv)
        dominated = pts[0] + rng.random(d) * (ref - pts[0])
        assert hypervolume(np.vstack([pts, dominated]), ref) == pytest.approx(hv)
        assert hypervolume(pts[pareto_mask(pts)], ref) == pytest.approx(hv)
        # adding any point never lowers it; adding one beyond the ideal point raises it
        extra = rng.random((1, d))
        assert hypervolume(np.vstack([pts, extra]), ref) >= hv - 1e-12
        better = pts.min(axis=0, keepdims=True) * 0.5
        assert hypervolume(np.vstack([pts, better]), ref) > hv
        # bounded by the box, and every point's own box is inside it
        assert max(np.prod(ref - p) for p in pts) - 1e-12 <= hv <= 1.0
