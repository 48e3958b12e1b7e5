"""tf.data pipelines: contents, determinism, errors, detection mixing and tf.distribute."""

import numpy as np
import pytest
import tensorflow as tf

from tfmedseg.data import (
    CaseArrays,
    DetectionSample,
    cases_from_cache,
    detection_dataset,
    distribute_dataset,
    global_batch_size,
    patch3d_dataset,
    slab3d_dataset,
    slice2d_dataset,
    stack25d_dataset,
)
from tfmedseg.errors import InvalidInputError
from tfmedseg.preprocessing.cache import CaseCache


def _cases(depths=(5, 7), hw=4):
    cases = []
    for i, d in enumerate(depths):
        # voxel value = 100 * (case + 1) + slice + 1: identifies case and slice, zero = padding
        image = np.broadcast_to((100.0 * (i + 1) + np.arange(d) + 1)[:, None, None], (d, hw, hw)).astype(np.float32)
        label = np.zeros((d, hw, hw), np.int32)
        label[d // 2, 1:3, 1:3] = 1
        cases.append(CaseArrays(f"case{i}", image, label))
    return cases


def _collect(ds, n=None):
    out = []
    for k, batch in enumerate(ds):
        if n is not None and k >= n:
            break
        out.append(tf.nest.map_structure(lambda t: t.numpy(), batch))
    return out


def test_stack25d_epoch_covers_every_slice_with_right_neighbours():
    cases = _cases()
    batches = _collect(stack25d_dataset(cases, batch_size=3, seed=5, epochs=1))
    assert len(batches) == 4  # 12 slices / 3
    xs = np.concatenate([b[0] for b in batches])
    centres = xs[:, 0, 0, 4]
    assert sorted(centres.tolist()) == sorted([101.0 + k for k in range(5)] + [201.0 + k for k in range(7)])
    first = xs[centres == 101.0][0, 0, 0]
    np.testing.assert_array_equal(first, [0, 0, 0, 0, 101, 102, 103, 104, 105])
    last = xs[centres == 207.0][0, 0, 0]
    np.testing.assert_array_equal(last, [203, 204, 205, 206, 207, 0, 0, 0, 0])
    # volume-by-volume: all slices of one case are contiguous in the stream
    case_of = (centres // 100).astype(int)
    assert (np.diff(case_of) != 0).sum() == 1
    ys = np.concatenate([b[1] for b in batches])
    np.testing.assert_array_equal(ys[centres == 204.0][0, 1:3, 1:3, 0], 1)  # case1: labeled slice 3 = value 204


def test_same_seed_same_batches_other_seed_differs():
    cases = _cases()
    a = _collect(stack25d_dataset(cases, 4, order="uniform", seed=1), n=5)
    b = _collect(stack25d_dataset(cases, 4, order="uniform", seed=1), n=5)
    c = _collect(stack25d_dataset(cases, 4, order="uniform", seed=2), n=5)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u[0], v[0])
    assert any(not np.array_equal(u[0], v[0]) for u, v in zip(a, c))
    # epochs differ from each other (infinite repeat, new order per epoch)
    e0 = np.concatenate([x[0][:, 0, 0, 4] for x in a[:3]])
    e1 = np.concatenate([x[0][:, 0, 0, 4] for x in a[3:5]] + [np.zeros(4)])
    assert not np.array_equal(e0, e1)


def test_slab3d_and_slice2d_shapes_and_values():
    cases = _cases(depths=(6,))
    batches = _collect(slab3d_dataset(cases, batch_size=2, seed=0, epochs=1))  # starts 0, 2
    assert len(batches) == 1
    x, y = batches[0]
    assert x.shape == (2, 8, 4, 4, 1) and y.shape == (2, 4, 4, 4, 1)
    got = sorted(tuple(v) for v in x[:, :, 0, 0, 0])
    assert got == [(0, 0, 101, 102, 103, 104, 105, 106), (101, 102, 103, 104, 105, 106, 0, 0)]
    xs, ys = _collect(slice2d_dataset(cases, batch_size=6, seed=0, epochs=1))[0]
    assert xs.shape == (6, 4, 4, 1) and sorted(xs[:, 0, 0, 0].tolist()) == [101, 102, 103, 104, 105, 106]
    assert ys.dtype == np.int32 and ys.sum() == 4


def test_patch_dataset_oversampling_and_empty_mask_error():
    label = np.zeros((12, 12, 12), np.int32)
    label[2, 2, 2] = 1
    case = CaseArrays("p0", np.ones((12, 12, 12), np.float32), label)
    ds = patch3d_dataset([case], 20, (4, 4, 4), foreground_fraction=0.5, samples_per_epoch=200, seed=3, epochs=1)
    ys = np.concatenate([b[1] for b in _collect(ds)])
    assert ys.shape == (200, 4, 4, 4, 1)
    frac = (ys[:, 2, 2, 2, 0] == 1).mean()
    assert 0.4 < frac < 0.6
    empty = CaseArrays("lits-empty", np.ones((8, 8, 8)), np.zeros((8, 8, 8), np.int32))
    with pytest.raises(InvalidInputError, match="lits-empty"):
        patch3d_dataset([case, empty], 2, (4, 4, 4))
    with pytest.raises(InvalidInputError, match="patch_size"):
        patch3d_dataset([case], 2, (4, 4))


def test_bad_inputs_name_the_case():
    cases = _cases()
    with pytest.raises(InvalidInputError, match="case9"):
        stack25d_dataset(cases + [CaseArrays("case9", np.zeros((3, 5, 5)), np.zeros((3, 5, 5)))], 2)
    with pytest.raises(InvalidInputError, match="nolabel"):
        slice2d_dataset([CaseArrays("nolabel", np.zeros((3, 4, 4)))], 2)
    with pytest.raises(InvalidInputError, match="order"):
        stack25d_dataset(cases, 2, order="random")
    with pytest.raises(InvalidInputError, match="thin"):
        slab3d_dataset([CaseArrays("thin", np.zeros((2, 4, 4)), np.zeros((2, 4, 4)))], 1)


def test_cases_from_cache(tmp_path):
    cache = CaseCache(tmp_path, {"v": 1})
    cache.save("c0", {"image": np.ones((3, 4, 4), np.float32), "label": np.ones((3, 4, 4), np.uint8)}, (1, 1, 1))
    (case,) = cases_from_cache(cache, ["c0"])
    assert case.image.shape == (3, 4, 4, 1) and case.label.dtype == np.int32


def _det_samples(n_lab=6, n_unl=5, size=8):
    lab, unl = [], []
    for i in range(n_lab):
        img = np.full((size, size), float(i + 1), np.float32)
        n = i % 3
        boxes = np.array([[0, 0, 2 + k, 2 + k] for k in range(n)], np.float32).reshape(-1, 4)
        masks = np.zeros((n, size, size), np.uint8)
        for k in range(n):
            masks[k, : 2 + k, : 2 + k] = 1
        lab.append(DetectionSample(f"L{i}", img, boxes, masks, np.arange(1, n + 1)))
    for i in range(n_unl):
        unl.append(DetectionSample(f"U{i}", np.full((size, size), -float(i + 1), np.float32)))
    return lab, unl


def test_detection_padding_and_mixing():
    lab, unl = _det_samples()
    ds = detection_dataset(lab, unl, batch_size=4, unlabeled_per_batch=2, max_instances=3, num_replicas=2, seed=0, epochs=1)
    batches = _collect(ds)
    assert len(batches) == 3  # 6 labeled / 2 per batch
    b = batches[0]
    assert b["boxes"].shape == (4, 3, 4) and b["masks"].shape == (4, 3, 8, 8) and b["classes"].shape == (4, 3)
    np.testing.assert_array_equal(b["labeled"], [True, False, True, False])  # one of each per replica
    for batch in batches:
        for j in range(4):
            value = batch["image"][j, 0, 0, 0]
            n = int(batch["num_instances"][j])
            if batch["labeled"][j]:
                i = int(value) - 1
                assert n == i % 3
                np.testing.assert_array_equal(batch["classes"][j], [1, 2, 3][:n] + [0] * (3 - n))
                assert batch["masks"][j, :n].sum() == sum((2 + k) ** 2 for k in range(n))
            else:
                assert value < 0 and n == 0 and batch["masks"][j].sum() == 0
            assert (batch["boxes"][j, n:] == 0).all()
    seen = sorted(int(b["image"][j, 0, 0, 0]) for b in batches for j in range(4) if b["labeled"][j])
    assert seen == [1, 2, 3, 4, 5, 6]
    with pytest.raises(InvalidInputError, match="L2"):
        detection_dataset(lab, unl, 4, 2, max_instances=1)
    with pytest.raises(InvalidInputError, match="unlabeled"):
        detection_dataset(lab, [], 4, 2)


def test_distributed_per_replica_batches(two_cpu_strategy):
    strategy = two_cpu_strategy
    gbs = global_batch_size(2, strategy)
    assert gbs == 4
    ds = stack25d_dataset(_cases(), gbs, order="uniform", seed=0, epochs=1)
    dist = distribute_dataset(ds, strategy)

    @tf.function
    def step(x, y):
        def replica(x, y):
            return tf.shape(x)[0], tf.reduce_sum(x[..., 4])

        return strategy.run(replica, args=(x, y))

    total, batches = 0.0, 0
    for x, y in dist:
        sizes, sums = step(x, y)
        assert [int(s) for s in strategy.experimental_local_results(sizes)] == [2, 2]
        total += sum(float(s) for s in strategy.experimental_local_results(sums))
        batches += 1
    assert batches == 3
    plain = sum(float(b[0][..., 4].sum()) for b in _collect(ds))
    assert total == pytest.approx(plain)
    with pytest.raises(InvalidInputError, match="batch_size"):
        distribute_dataset(stack25d_dataset(_cases(), 3, seed=0), strategy)
