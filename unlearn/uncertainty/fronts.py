"""Pareto fronts and dominated hypervolume of small point sets (numpy only, no torch).

Conventions: every objective is *minimised* unless ``minimize`` says otherwise for
:func:`pareto_mask`; :func:`hypervolume` always minimises (negate a coordinate to maximise it).

* ``p`` dominates ``q`` when ``p_k ≤ q_k`` for every k and ``p_k < q_k`` for some k;
* the hypervolume of a set P with reference point r is the Lebesgue measure of
  ``⋃_{p ∈ P} [p, r]`` (the boxes from each point up to r); points that are not strictly below r
  in every coordinate add nothing.

:func:`hypervolume` is exact in any dimension by slicing along the last coordinate
(``HV_d(P) = Σ_i HV_{d-1}({p : p_d ≤ z_i}) · (z_{i+1} − z_i)`` over the sorted distinct
``z_i = p_d``, with ``z_{n+1} = r_d``); it costs O(n^{d-1} log n), fine for the few dozen points of
a results table or a training curve (2-D and 3-D here).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _as_points(points, name: str = "points") -> np.ndarray:
    array = np.asarray(points, dtype=float)
    if array.ndim == 1 and array.size == 0:
        return array.reshape(0, 0)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n points × d objectives), got shape {array.shape}")
    return array


def pareto_mask(points, minimize: bool | Sequence[bool] = True) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``points`` (n × d).

    ``minimize``: one bool for all objectives or one per column (False: maximise that column).
    Rows with a non-finite coordinate are never on the front and dominate nothing; duplicated
    rows do not dominate each other, so all copies of a front point are marked."""
    array = _as_points(points)
    n = array.shape[0]
    if n == 0:
        return np.zeros(0, dtype=bool)
    signs = np.where(np.broadcast_to(np.asarray(minimize, dtype=bool), (array.shape[1],)), 1.0, -1.0)
    values = array * signs
    finite = np.isfinite(values).all(axis=1)
    mask = finite.copy()
    for i in np.flatnonzero(finite):
        others = values[finite]
        dominated = (others <= values[i]).all(axis=1) & (others < values[i]).any(axis=1)
        mask[i] = not dominated.any()
    return mask


def hypervolume(points, reference) -> float:
    """Dominated hypervolume of ``points`` (n × d, all minimised) up to ``reference`` (d,).

    Only points strictly below the reference in every coordinate count; non-finite rows are
    ignored. An empty set (or none below the reference) has volume 0."""
    ref = np.asarray(reference, dtype=float).reshape(-1)
    if not np.isfinite(ref).all():
        raise ValueError(f"the reference point must be finite, got {ref.tolist()}")
    array = _as_points(points)
    if array.size == 0:
        return 0.0
    if array.shape[1] != ref.size:
        raise ValueError(f"points have {array.shape[1]} objectives but the reference has {ref.size}")
    keep = np.isfinite(array).all(axis=1) & (array < ref).all(axis=1)
    return float(_slice_volume(array[keep], ref))


def _slice_volume(points: np.ndarray, ref: np.ndarray) -> float:
    if len(points) == 0:
        return 0.0
    d = ref.size
    if d == 1:
        return float(ref[0] - points[:, 0].min())
    if d == 2:  # sweep in x: each point adds the strip below the best y so far
        order = np.lexsort((points[:, 1], points[:, 0]))
        volume, best_y = 0.0, ref[1]
        for x, y in points[order]:
            if y < best_y:
                volume += (ref[0] - x) * (best_y - y)
                best_y = y
        return volume
    order = np.argsort(points[:, -1], kind="stable")
    ordered = points[order]
    levels = ordered[:, -1]
    volume = 0.0
    for i in range(len(ordered)):
        upper = levels[i + 1] if i + 1 < len(ordered) else ref[-1]
        height = upper - levels[i]
        if height > 0:
            volume += _slice_volume(ordered[: i + 1, :-1], ref[:-1]) * height
    return volume


__all__ = ["hypervolume", "pareto_mask"]
