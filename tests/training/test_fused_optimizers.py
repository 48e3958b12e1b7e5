"""FusedAdam / FusedSGD equal Keras' Adam / SGD step for step, with a much smaller training graph."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmedseg.training.fused_optimizers import FusedAdam, FusedSGD
from tfmedseg.training.optimizers import get_optimizer


def _variables(seed=0):
    rng = np.random.default_rng(seed)
    return [keras.Variable(rng.normal(size=shape).astype("float32")) for shape in ((3, 4), (4,), (2, 2, 5))]


def _run(opt, steps=6, graph=True):
    variables = _variables()
    rng = np.random.default_rng(1)
    grads = [[tf.constant(rng.normal(size=v.shape).astype("float32")) for v in variables] for _ in range(steps)]
    opt.build(variables)

    def apply(gs):
        opt.apply_gradients(zip(gs, variables))

    fn = tf.function(apply) if graph else apply
    for gs in grads:
        fn(gs)
    return [v.numpy() for v in variables]


@pytest.mark.parametrize("kwargs", [{}, {"beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-3}, {"amsgrad": True}])
def test_fused_adam_equals_keras_adam(kwargs):
    lr = keras.optimizers.schedules.ExponentialDecay(0.05, 2, 0.5)  # a schedule: lr changes per step
    want = _run(keras.optimizers.Adam(learning_rate=lr, **kwargs))
    for graph in (True, False):
        got = _run(FusedAdam(learning_rate=lr, **kwargs), graph=graph)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs", [{"momentum": 0.9}, {"momentum": 0.9, "nesterov": True}, {"momentum": 0.0}])
def test_fused_sgd_equals_keras_sgd(kwargs):
    want = _run(keras.optimizers.SGD(learning_rate=0.1, **kwargs))
    got = _run(FusedSGD(learning_rate=0.1, **kwargs))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_fused_training_graph_is_small_and_the_factory_uses_it():
    def ops_of(opt):
        variables = [keras.Variable(np.ones((2,), "float32")) for _ in range(20)]
        opt.build(variables)
        fn = tf.function(lambda: opt.apply_gradients(zip([tf.ones((2,))] * 20, variables)))
        return len(fn.get_concrete_function().graph.get_operations())

    fused, plain = ops_of(FusedAdam(1e-3)), ops_of(keras.optimizers.Adam(1e-3))
    assert fused < plain / 2, (fused, plain)  # measured: 20 variables, 201 vs 812 ops
    assert ops_of(FusedSGD(0.1, momentum=0.9)) < ops_of(keras.optimizers.SGD(0.1, momentum=0.9))
    assert type(get_optimizer("adam")) is FusedAdam and type(get_optimizer("sgd", momentum=0.9)) is FusedSGD
    clone = keras.optimizers.deserialize(keras.optimizers.serialize(FusedAdam(2e-3, beta_1=0.8)))
    assert type(clone) is FusedAdam and clone.beta_1 == 0.8
