"""RAdam and Lookahead against their published update rules (numpy), factory, config round trip."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmedseg.errors import ConfigError
from tfmedseg.training.optimizers import OPTIMIZER_NAMES, Lookahead, RAdam, get_optimizer

A = np.array([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 1.0]])
B = np.array([1.0, -1.0, 0.5])
W0 = np.array([0.5, -0.3, 2.0])


def _grad(w):
    """Gradient of the quadratic 0.5 w^T A w - b^T w."""
    return A @ w - B


def _np_radam(steps, lr, b1=0.9, b2=0.999, eps=1e-8, thr=5.0):
    """Liu et al. 2020, Algorithm 2 (with epsilon on sqrt(v) as in PyTorch)."""
    w, m, v = W0.copy(), np.zeros(3), np.zeros(3)
    rho_inf = 2 / (1 - b2) - 1
    for t in range(1, steps + 1):
        g = _grad(w)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1**t)
        rho = rho_inf - 2 * t * b2**t / (1 - b2**t)
        if rho > thr:
            r = np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            w = w - lr * r * m_hat * np.sqrt(1 - b2**t) / (np.sqrt(v) + eps)
        else:
            w = w - lr * m_hat
    return w


def _np_lookahead(steps, inner_step, k=5, alpha=0.5):
    """Zhang et al. 2019, Algorithm 1: k fast steps, then phi += alpha (theta - phi), theta = phi."""
    w, slow, state = W0.copy(), W0.copy(), {}
    for t in range(1, steps + 1):
        w = inner_step(w, _grad(w), t, state)
        if t % k == 0:
            slow = slow + alpha * (w - slow)
            w = slow.copy()
    return w


def _run(opt, steps):
    var = keras.Variable(W0.astype("float32"))
    for _ in range(steps):
        opt.apply([tf.constant(_grad(var.numpy().astype("float64")).astype("float32"))], [var])
    return var.numpy()


@pytest.mark.parametrize("threshold", [4.0, 5.0])
def test_radam_matches_algorithm(threshold):
    # 12 steps cross the switch from the un-rectified (SGDM) phase to the rectified one.
    got = _run(RAdam(learning_rate=0.05, sma_threshold=threshold), 12)
    np.testing.assert_allclose(got, _np_radam(12, 0.05, thr=threshold), atol=1e-6)
    assert not np.allclose(_np_radam(12, 0.05, thr=4.0), _np_radam(12, 0.05, thr=5.0))


def test_lookahead_sgd_and_adam_match_algorithm():
    sgd = lambda w, g, t, s: w - 0.1 * g  # noqa: E731
    np.testing.assert_allclose(_run(Lookahead(keras.optimizers.SGD(0.1)), 12), _np_lookahead(12, sgd), atol=1e-6)

    def adam(w, g, t, s, lr=0.05, b1=0.9, b2=0.999, eps=1e-7):
        s["m"] = b1 * s.get("m", 0) + (1 - b1) * g
        s["v"] = b2 * s.get("v", 0) + (1 - b2) * g * g
        return w - lr * np.sqrt(1 - b2**t) / (1 - b1**t) * s["m"] / (np.sqrt(s["v"]) + eps)

    opt = Lookahead(keras.optimizers.Adam(0.05), k=3, alpha=0.8)
    np.testing.assert_allclose(_run(opt, 10), _np_lookahead(10, adam, k=3, alpha=0.8), atol=1e-5)
    assert int(opt.iterations.numpy()) == 10


def test_config_round_trip_and_factory():
    opt = get_optimizer("radam", learning_rate=2e-3, lookahead=True, lookahead_k=6, sma_threshold=4.0, weight_decay=1e-4)
    clone = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert isinstance(clone, Lookahead) and isinstance(clone.inner_optimizer, RAdam)
    assert clone.k == 6 and clone.inner_optimizer.sma_threshold == 4.0
    assert clone.inner_optimizer.weight_decay == pytest.approx(1e-4)
    assert set(OPTIMIZER_NAMES) >= {"adam", "sgd", "radam"}
    with pytest.raises(ConfigError, match="unknown optimizer 'radm'.*allowed"):
        get_optimizer("radm")
    with pytest.raises(ConfigError, match="learning_rate"):
        get_optimizer("adam", learning_rate=-1.0)
    with pytest.raises(ConfigError, match="clipnorm"):
        Lookahead(keras.optimizers.SGD(), clipnorm=1.0)


def test_lookahead_radam_under_mirrored_strategy_matches_one_device(two_cpu_strategy, rng):
    x = rng.normal(size=(8, 6)).astype("float32")
    y = (x @ rng.normal(size=(6, 1))).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8).repeat()

    def train(strategy):
        with strategy.scope():
            inp = keras.Input((6,))
            model = keras.Model(inp, keras.layers.Dense(1, kernel_initializer="ones")(inp))
            model.compile(optimizer=Lookahead(RAdam(0.05), k=2), loss="mse")
        model.fit(ds, steps_per_epoch=7, epochs=1, verbose=0, shuffle=False)
        return model.get_weights()[0]

    np.testing.assert_allclose(train(two_cpu_strategy), train(tf.distribute.get_strategy()), atol=1e-5)
