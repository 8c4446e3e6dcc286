"""Harmless third-party log lines, filtered at the imports that cause them.

Loading a model imports ``transformers.quantizers``, which imports torchao, which logs, on a
CPU-only torch wheel:

* ``torchao``: "Failed to load …/torchao/_C_mxfp8….so" and "…_C_cutlass_90a….so": CUDA-only
  kernels (MX-FP8, CUTLASS for Hopper) that a CPU machine never calls;
* ``torch.utils._pytree``: "<enum 'KernelPreference'> is an Enum subclass and is now natively
  supported by torch.compile …": a deprecation notice about torchao's own registration.

Only these exact messages are dropped (a :class:`logging.Filter` on the two loggers); every other
record of those loggers, and every warning of our own code, still shows.
"""

from __future__ import annotations

import logging
import re

KNOWN_NOISE: dict[str, re.Pattern[str]] = {
    "torchao": re.compile(r"^Failed to load \S*torchao/_C_\w+\S*\.so"),
    "torch.utils._pytree": re.compile(r"is an Enum subclass and is now natively supported by torch\.compile"),
}


class _DropKnown(logging.Filter):
    def __init__(self, pattern: re.Pattern[str]) -> None:
        super().__init__()
        self.pattern = pattern

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


def quiet_third_party() -> None:
    """Install the filters of :data:`KNOWN_NOISE` (idempotent); call before importing transformers' models."""
    for name, pattern in KNOWN_NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropKnown) for f in logger.filters):
            logger.addFilter(_DropKnown(pattern))
