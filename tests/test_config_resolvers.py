"""``${dir_name:…}``: Hydra's plain-multirun job dirs stay valid file names however long the overrides."""

from __future__ import annotations

from omegaconf import OmegaConf

from unlearn.config_resolvers import MAX_DIR_NAME, register_resolvers


def _resolve(text: str) -> str:
    register_resolvers()
    return OmegaConf.create({"name": text, "dir": "${dir_name:${name}}"}).dir


def test_a_short_name_is_unchanged() -> None:
    assert _resolve("aggregator=dual,seed=0") == "aggregator=dual,seed=0"


def test_a_long_name_is_cut_with_a_hash_that_keeps_names_distinct() -> None:
    long_a = ",".join(f"trainer.key_{i}=value_{i}" for i in range(30))
    long_b = long_a + ",seed=1"  # the same head: only the hash tells them apart
    a, b = _resolve(long_a), _resolve(long_b)
    assert len(a.encode()) <= MAX_DIR_NAME and len(b.encode()) <= MAX_DIR_NAME
    assert a != b and a.rsplit("-", 1)[0] == b.rsplit("-", 1)[0] and long_a.startswith(a.rsplit("-", 1)[0])
    assert a == _resolve(long_a)  # deterministic: a resumed multirun finds its dirs
    assert len(_resolve("é" * 200).encode()) <= MAX_DIR_NAME  # bytes, not characters, and no split character
