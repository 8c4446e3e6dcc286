"""Quantiles of Student's t distribution, for any real df > 0 (Satterthwaite df are not integers).

``t_quantile(p, df)`` = F⁻¹_ν(p) from SciPy (``scipy.stats.t.ppf``, a dependency of scikit-learn
that the project declares itself); df = ∞ gives the normal quantile.
"""

from __future__ import annotations

import math


def t_quantile(p: float, df: float) -> float:
    """F⁻¹_ν(p) of Student's t with ν = ``df`` degrees of freedom (ν = ∞: standard normal)."""
    from scipy.stats import norm, t

    if not 0.0 < p < 1.0:
        raise ValueError(f"t_quantile needs 0 < p < 1, got {p}")
    if not df > 0:
        raise ValueError(f"t_quantile needs df > 0, got {df}")
    return float(norm.ppf(p) if math.isinf(df) else t.ppf(p, df))
