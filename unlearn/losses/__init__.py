"""Losses. The forget loss is chosen by the ``loss`` config group; the ``objectives`` group lists
every objective of a run with its loss (conf/objectives/)."""

from unlearn.losses.forget import NPO, UCE, ForgetLoss, GradientAscent, log1mexp
from unlearn.losses.normal import AnswerCrossEntropy, KLToReference, kl_to_reference, retain_cross_entropy
from unlearn.losses.tokens import IGNORE_INDEX, answer_token_logprobs, masked_mean

__all__ = [
    "IGNORE_INDEX",
    "AnswerCrossEntropy",
    "KLToReference",
    "NPO",
    "UCE",
    "ForgetLoss",
    "GradientAscent",
    "answer_token_logprobs",
    "kl_to_reference",
    "log1mexp",
    "masked_mean",
    "retain_cross_entropy",
]
