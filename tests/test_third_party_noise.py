"""Known harmless third-party log lines are dropped; everything else from those loggers shows."""

from __future__ import annotations

import logging

import pytest

from unlearn.models.noise import quiet_third_party


def test_known_lines_are_dropped_and_others_kept(caplog: pytest.LogCaptureFixture) -> None:
    quiet_third_party()
    quiet_third_party()  # idempotent: one filter per logger
    assert sum(type(f).__name__ == "_DropKnown" for f in logging.getLogger("torchao").filters) == 1
    with caplog.at_level(logging.WARNING):
        logging.getLogger("torchao").warning("Failed to load /x/site-packages/torchao/_C_mxfp8.cpython-310-x86_64-linux-gnu.so: boom")
        logging.getLogger("torch.utils._pytree").warning(
            "<enum 'KernelPreference'> is an Enum subclass and is now natively supported by torch.compile as an opaque value type.")
        logging.getLogger("torchao").warning("quantize_ skipped layer lm_head")
        logging.getLogger("torch.utils._pytree").warning("something else")
    assert [r.getMessage() for r in caplog.records] == ["quantize_ skipped layer lm_head", "something else"]
