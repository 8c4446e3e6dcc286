"""Aggregators: pure maps from the m×m Gramian of the objective gradients to weights.

TorchJD's Gramian weightings (UPGrad, DualProj, PCGrad, CAGrad, IMTL-G, Aligned-MTL) are wrapped
in :mod:`unlearn.aggregators.torchjd_methods` (torchjd is imported at the first aggregation).

Add one by writing a module with an :class:`Aggregator` subclass and a YAML file under
``conf/aggregator/`` whose ``_target_`` names it.
"""

from unlearn.aggregators.base import AggregationResult, Aggregator, gramian_of
from unlearn.aggregators.dual import DualSpace, dual_space_weights
from unlearn.aggregators.mgda import MGDA, min_norm_weights
from unlearn.aggregators.torchjd_methods import (
    IMTLG,
    AlignedMTL,
    CAGrad,
    DualProj,
    PCGrad,
    TorchJDAggregator,
    UPGrad,
)
from unlearn.aggregators.weighted_sum import WeightedSum

__all__ = [
    "AggregationResult",
    "Aggregator",
    "AlignedMTL",
    "CAGrad",
    "DualProj",
    "DualSpace",
    "IMTLG",
    "MGDA",
    "PCGrad",
    "TorchJDAggregator",
    "UPGrad",
    "WeightedSum",
    "dual_space_weights",
    "gramian_of",
    "min_norm_weights",
]
