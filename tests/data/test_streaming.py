"""Real-dataset scale: lazy cases (headers first, voxels on demand), a cache built case by case that
resumes after an interruption, pipelines streaming slices from it, and per-worker shards."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest

from tfmedseg.data.distribute import check_shard, shard_rows, worker_shard
from tfmedseg.data.pipelines import build_dataset, stack25d_dataset
from tfmedseg.data.source import CaseArrays, cases_from_cache, slice_foreground
from tfmedseg.datasets import load_dataset
from tfmedseg.datasets.phantoms._nifti import save_nifti
from tfmedseg.errors import InvalidInputError
from tfmedseg.experiments.runner import prepare_cases
from tfmedseg.io import nifti
from tfmedseg.io.lazy import LazyVolume, read_nifti_lazy
from tfmedseg.preprocessing.cache import CachedArray, CaseCache


def _lits(root, n_cases=3, depth=5):
    rng = np.random.default_rng(0)
    for n in range(n_cases):
        ct = rng.integers(-200, 200, (depth + n, 6, 8)).astype(np.int16)
        seg = np.zeros(ct.shape, np.uint8)
        seg[1:3, 2:4, 2:5] = 1
        seg[2, 3, 3] = 2
        save_nifti(ct, root / f"volume-{n}.nii", (3.0, 2.0, 1.5), (-5.0, -7.0, 0.0))
        save_nifti(seg, root / f"segmentation-{n}.nii", (3.0, 2.0, 1.5), (-5.0, -7.0, 0.0))
    return root


@pytest.fixture
def counted_reads(monkeypatch):
    """Count every voxel read of a NIfTI file (read_nifti is what a lazy volume calls)."""
    reads = []
    real = nifti.read_nifti

    def counting(path, modality="OT", **kwargs):
        reads.append(str(path))
        return real(path, modality, **kwargs)

    monkeypatch.setattr(nifti, "read_nifti", counting)
    return reads


def test_lazy_lits_reads_no_voxels_until_asked(tmp_path, counted_reads):
    cases = load_dataset("lits", _lits(tmp_path))
    assert len(cases) == 3 and counted_reads == []
    ct, label = cases[1].images["ct"], cases[1].label
    assert isinstance(ct, LazyVolume) and not ct.loaded and ct.shape[0] == 6 and counted_reads == []
    hu = ct.array
    assert counted_reads == [str(tmp_path / "volume-1.nii")] and ct.loaded
    assert hu.shape == ct.shape and hu.dtype == np.float32
    assert label.array.dtype == np.uint8 and set(np.unique(label.array)) == {0, 1, 2}
    assert len(counted_reads) == 2
    cases[1].release()
    assert not ct.loaded and not label.loaded
    np.testing.assert_array_equal(ct.array, hu)  # read again after release
    assert len(counted_reads) == 3


def test_lazy_geometry_equals_eager_read(tmp_path):
    import nibabel as nib

    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    affine = np.array([[0, 0, -1.5, 10], [2.0, 0, 0, -3], [0, -3.0, 0, 7], [0, 0, 0, 1]])  # permuted + flipped axes
    path = tmp_path / "oblique.nii"
    nib.save(nib.Nifti1Image(data, affine), str(path))
    lazy, eager = read_nifti_lazy(path, "CT"), nifti.read_nifti(path, "CT")
    assert lazy.shape == eager.shape and lazy.spacing == eager.spacing
    np.testing.assert_allclose(lazy.affine, eager.affine)
    assert lazy.meta["source_shape"] == eager.meta["source_shape"]
    np.testing.assert_array_equal(lazy.array, eager.array)


def test_header_declaring_more_voxels_than_the_file_fails_before_reading(tmp_path, counted_reads):
    _lits(tmp_path, 1)
    vol = tmp_path / "volume-0.nii"
    vol.write_bytes(vol.read_bytes()[:500])
    with pytest.raises(InvalidInputError, match="truncated") as info:
        load_dataset("lits", tmp_path)
    assert str(vol) in str(info.value) and counted_reads == []


def _build(case):
    return ({"image": np.asarray(case.images["ct"].array, np.float32) / 100.0, "label": case.label.array},
            case.images["ct"].spacing, {"id": case.case_id})


def test_cache_built_case_by_case_resumes_after_interruption(tmp_path, counted_reads):
    cases = load_dataset("lits", _lits(tmp_path / "data", 4))
    cache = CaseCache(tmp_path / "cache", {"v": 1})
    built = []

    def failing(case):
        if case.case_id == "lits-002":
            raise KeyboardInterrupt  # the user stops the run in the middle of the third case
        built.append(case.case_id)
        return _build(case)

    with pytest.raises(KeyboardInterrupt):
        prepare_cases(cases, cache, failing)
    assert built == ["lits-000", "lits-001"]
    assert not any(v.loaded for c in cases[:2] for v in c.volumes)  # released after each case
    assert not list((tmp_path / "cache").rglob("*.tmp"))

    def counting(case):
        built.append(case.case_id)
        return _build(case)

    prepared = prepare_cases(cases, cache, counting)
    assert built == ["lits-000", "lits-001", "lits-002", "lits-003"]  # finished cases not redone
    assert not any(v.loaded for c in cases for v in c.volumes)
    reads = len(counted_reads)
    again = prepare_cases(cases, cache, counting)  # a rerun reuses every case
    assert len(built) == 4 and len(counted_reads) == reads
    image = again["lits-003"]["image"]
    assert isinstance(image, CachedArray) and image.streamable and image.shape == (8, 6, 8)
    np.testing.assert_array_equal(np.asarray(image), _build(cases[3])[0]["image"])
    assert prepared.keys() == again.keys()


def test_cached_array_reads_only_the_slices_asked(tmp_path, monkeypatch):
    cache = CaseCache(tmp_path, {"v": 1})
    image = np.random.default_rng(1).random((7, 4, 5)).astype(np.float32)
    cache.save("c", {"image": image, "label": (image > 0.5).astype(np.uint8)}, (1.0, 1.0, 1.0))
    lazy = cache.lazy_arrays("c")["image"]
    spans = []
    real = CachedArray.read
    monkeypatch.setattr(CachedArray, "read", lambda self, a=0, b=None: spans.append((a, b)) or real(self, a, b))
    np.testing.assert_array_equal(lazy[3], image[3])
    np.testing.assert_array_equal(lazy[-1], image[-1])
    np.testing.assert_array_equal(lazy[2:5, 1:3], image[2:5, 1:3])
    np.testing.assert_array_equal(lazy[np.array([4, 2, 3])], image[[4, 2, 3]])
    assert spans == [(3, 4), (6, 7), (2, 5), (2, 5)]
    np.testing.assert_array_equal(lazy[..., 0], image[..., 0])  # anything else: the whole array
    np.testing.assert_array_equal(lazy > 0.5, image > 0.5)
    assert lazy.max() == image.max() and len(lazy) == 7
    view = lazy.view(dtype=np.float64, channel=True)
    assert view.shape == (7, 4, 5, 1) and view[1:2].dtype == np.float64
    with pytest.raises(IndexError):
        lazy[7]


def test_cached_array_truncated_file_or_header_is_a_clear_error(tmp_path):
    """A cache file cut short after it was opened, or an array header declaring more than its zip
    member holds, is one error naming the file (checked before mapping, never a SIGBUS)."""
    cache = CaseCache(tmp_path, {"v": 1})
    image = np.arange(7 * 4 * 5, dtype=np.float32).reshape(7, 4, 5)
    cache.save("c", {"image": image}, (1.0, 1.0, 1.0))
    path = cache.path("c")
    lazy = cache.lazy_arrays("c")["image"]
    np.testing.assert_array_equal(lazy[6], image[6])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidInputError, match="truncated") as info:
        lazy[6]
    assert str(path) in str(info.value) and "(7, 4, 5)" in str(info.value)

    assert b"'shape': (7, 4, 5)" in data
    path.write_bytes(data.replace(b"'shape': (7, 4, 5)", b"'shape': (9, 4, 5)"))
    with pytest.raises(InvalidInputError, match="truncated") as info:
        cache.lazy_arrays("c")
    assert str(path) in str(info.value)


def test_old_compressed_cache_file_is_rewritten_streamable(tmp_path):
    cache = CaseCache(tmp_path, {"v": 1})
    cache.directory.mkdir(parents=True)
    np.savez_compressed(cache.path("c"), image=np.ones((3, 2, 2), np.float32), __spacing__=np.ones(3),
                        __meta__=np.asarray(json.dumps({})))
    lazy = cache.lazy_arrays("c")["image"]
    assert not lazy.streamable and lazy[1].tolist() == [[1, 1], [1, 1]]  # still readable
    assert cache.ensure("c", lambda: pytest.fail("a readable case is not rebuilt")) is False
    assert cache.lazy_arrays("c")["image"].streamable


def test_streamed_pipeline_equals_in_memory(tmp_path):
    rng = np.random.default_rng(2)
    cache = CaseCache(tmp_path, {"v": 1})
    memory = []
    for i, depth in enumerate((5, 7)):
        image = rng.random((depth, 8, 8)).astype(np.float32)
        label = (rng.random((depth, 8, 8)) > 0.7).astype(np.uint8)
        label[0] = 0
        cache.save(f"c{i}", {"image": image, "label": label}, (1.0, 1.0, 1.0))
        memory.append(CaseArrays(f"c{i}", image, label))
    streamed = cases_from_cache(cache, ["c0", "c1"], stream=True)
    assert all(c.streamed for c in streamed) and not any(c.streamed for c in memory)
    np.testing.assert_array_equal(slice_foreground(streamed[1].label, chunk=3), slice_foreground(memory[1].label))
    for order in ("volume", "foreground"):
        a = list(stack25d_dataset(memory, 4, order=order, seed=3, epochs=1).as_numpy_iterator())
        b = list(stack25d_dataset(streamed, 4, order=order, seed=3, epochs=1).as_numpy_iterator())
        assert len(a) == len(b) == 3
        for (xa, ya), (xb, yb) in zip(a, b):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)


def test_shards_are_disjoint_and_cover_every_sample():
    table = np.stack([np.repeat(np.arange(7), 3), np.tile(np.arange(3), 7)], axis=1)
    parts = [shard_rows(table, (3, i)) for i in range(3)]
    rows = np.concatenate(parts)
    assert len(rows) == len(table) and len({tuple(r) for r in rows}) == len(table)
    assert all(len(set(p[:, 0].tolist()) & set(q[:, 0].tolist())) == 0 for k, p in enumerate(parts) for q in parts[k + 1:])
    with pytest.raises(InvalidInputError, match="shard"):
        check_shard((2, 2))

    def extract(row):
        return (np.asarray([row[0] * 10 + row[1]], np.int64),)

    import tensorflow as tf

    spec = [tf.TensorSpec([1], tf.int64)]
    seen = []
    for i in range(3):
        ds = build_dataset(lambda rng: table[rng.permutation(len(table))], 2, extract, spec, 1, seed=0, epochs=1, shard=(3, i))
        got = [int(v) for (x,) in ds.as_numpy_iterator() for v in x.ravel()]
        assert {v // 10 % 3 for v in got} == {i}  # only this worker's cases were extracted
        seen += got
    assert sorted(seen) == sorted(int(a * 10 + b) for a, b in table)
    with pytest.raises(InvalidInputError, match="no sample"):
        build_dataset(lambda rng: table[:3], 2, extract, spec, 1, epochs=1, shard=(3, 1))


def test_worker_shard_from_tf_config_and_strategy(monkeypatch):
    cluster = {"chief": ["h0:1"], "worker": ["h1:1", "h2:1", "h3:1"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}}))
    assert worker_shard() == (4, 2)
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "chief", "index": 0}}))
    assert worker_shard() == (4, 0)
    monkeypatch.delenv("TF_CONFIG")
    assert worker_shard() is None

    class Resolver:
        task_type, task_id = "worker", 0

        def cluster_spec(self):
            return types.SimpleNamespace(as_dict=lambda: {"worker": ["a:1", "b:1"]})

    assert worker_shard(types.SimpleNamespace(cluster_resolver=Resolver())) == (2, 0)
    assert worker_shard(types.SimpleNamespace(cluster_resolver=None)) is None
