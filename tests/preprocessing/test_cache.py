"""The npz case cache: built once, reused, rebuilt when the config changes; atomic; bad ids."""

import dataclasses

import numpy as np
import pytest

from tfmedseg.errors import InvalidInputError
from tfmedseg.preprocessing.cache import CaseCache, hash_config


@dataclasses.dataclass
class _Prep:
    hu_min: float = -200.0
    size: int = 256


def test_cache_reuse_and_rebuild_on_config_change(tmp_path):
    calls = []

    def build():
        calls.append(1)
        return {"image": np.arange(8, dtype=np.float32).reshape(2, 2, 2), "label": np.ones((2, 2, 2), np.uint8)}, (2.5, 0.7, 0.7), {"src": "a.nii"}

    cache = CaseCache(tmp_path, _Prep())
    first = cache.get_or_build("lits-001", build)
    assert first.built and len(calls) == 1
    again = CaseCache(tmp_path, _Prep()).get_or_build("lits-001", build)
    assert not again.built and len(calls) == 1
    np.testing.assert_array_equal(again.arrays["image"], first.arrays["image"])
    assert again.arrays["label"].dtype == np.uint8
    assert again.spacing == (2.5, 0.7, 0.7) and again.meta == {"src": "a.nii"}
    changed = CaseCache(tmp_path, _Prep(size=128))
    assert changed.key != cache.key
    assert changed.get_or_build("lits-001", build).built and len(calls) == 2
    assert (tmp_path / cache.key / "config.json").is_file()
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob("*.tfmedseg-partial-*"))
    assert hash_config({"a": 1, "b": 2}) == hash_config({"b": 2, "a": 1})


def test_corrupt_file_is_rebuilt_and_bad_id(tmp_path):
    cache = CaseCache(tmp_path, {"v": 1})
    cache.save("c1", {"x": np.zeros(3)}, (1.0,))
    cache.path("c1").write_bytes(b"not a zip")
    with pytest.raises(InvalidInputError, match="c1.npz"):
        cache.load("c1")
    entry = cache.get_or_build("c1", lambda: ({"x": np.ones(3)}, (1.0,), {}))
    assert entry.built and cache.load("c1").arrays["x"].tolist() == [1, 1, 1]
    with pytest.raises(InvalidInputError, match="case_id"):
        cache.path("../escape")


def test_a_write_stopped_midway_leaves_no_staging(tmp_path):
    """Case files stage under the visible ``io._atomic`` name and vanish when the write is stopped."""
    cache = CaseCache(tmp_path, _Prep())
    seen = []

    def build():
        return {"image": np.zeros((2, 2, 2), np.float32)}, (1.0, 1.0, 1.0), {}

    def stopped(f):
        seen.append(f.name)
        f.write(b"half")
        raise KeyboardInterrupt

    cache.get_or_build("lits-001", build)
    target = cache.path("lits-002")
    with pytest.raises(KeyboardInterrupt):
        cache._atomic_write(target, stopped)
    assert ".tfmedseg-partial-" in seen[0] and not target.exists()
    assert sorted(p.name for p in target.parent.iterdir()) == sorted(["config.json", cache.path("lits-001").name])
